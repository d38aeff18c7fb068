//! CRC-32 for the STUN FINGERPRINT attribute (RFC 5389 §15.5).
//!
//! FINGERPRINT is CRC-32 (ISO/IEC 3309, the one in Ethernet and zlib) XORed with `0x5354554e`
//! ("STUN"), so a STUN packet stays distinguishable from other protocols that carry a CRC-32 too.
//! A bitwise implementation is enough: STUN messages are a few dozen bytes, once per minutes.

/// XORed into the CRC so FINGERPRINT differs from a plain CRC-32 of the same bytes.
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Plain CRC-32 (reflected, polynomial `0xEDB88320`, init and final XOR `0xFFFFFFFF`).
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// FINGERPRINT value over `message_prefix` (the message up to, not including, the attribute; its
/// header length field must already count the 8-byte FINGERPRINT attribute).
pub(crate) fn fingerprint(message_prefix: &[u8]) -> u32 {
    crc32(message_prefix) ^ FINGERPRINT_XOR
}

#[cfg(test)]
mod tests {
    use super::crc32;

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
