//! Placeholder: STUN and NAT classification (see the issue brief).

/// A STUN responder for labs; see `wgmesh-lab stun-server`.
pub mod lab {
    /// Placeholder until implemented.
    pub fn run_stun_server(_args: &[String]) -> Result<(), String> {
        Err("not implemented yet".to_owned())
    }
}
