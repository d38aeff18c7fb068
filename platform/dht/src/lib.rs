//! Placeholder: DHT rendezvous (see the issue brief).

/// Runs a local DHT testnet for labs; see `wgmesh-lab dht-testnet`.
pub mod lab {
    /// Placeholder until implemented.
    pub fn run_testnet(_args: &[String]) -> Result<(), String> {
        Err("not implemented yet".to_owned())
    }
}
