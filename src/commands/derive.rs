//! `wgmesh derive`: the network a secret makes, computed offline.

use crate::cli::DeriveArgs;
use crate::{CliError, output, secret_source};
use anyhow::Context as _;
use serde_json::json;
use wgmesh_derive::{MeshAddresses, MeshKeys, NodeSeed};

pub fn run(args: &DeriveArgs) -> Result<(), CliError> {
    let loaded = secret_source::load(&args.secret, &secret_source::SecretEnv::from_process())
        .map_err(CliError::usage)?;
    for warning in &loaded.warnings {
        output::warn(warning);
    }
    let seed = args
        .node_seed
        .as_deref()
        .map(NodeSeed::from_hex)
        .transpose()
        .context("invalid --node-seed")
        .map_err(CliError::usage)?;
    let keys = MeshKeys::derive(&loaded.secret);
    let mut report = json!({
        "network_id": hex::encode(keys.network_id()),
        "ipv4_subnet": keys.ipv4_subnet().to_string(),
        "ipv6_prefix": keys.ipv6_prefix().to_string(),
        "control_port": keys.control_port(),
        "lan_group": keys.lan_group().to_string(),
    });
    if let Some(seed) = &seed {
        let public_key = keys.node_public_key(seed);
        let addresses = MeshAddresses::derive(&keys, &public_key, args.collision_counter);
        report["public_key"] = json!(public_key.to_base64());
        report["mesh_ipv4"] = json!(addresses.ipv4.to_string());
        report["mesh_ipv6"] = json!(addresses.ipv6.to_string());
    }
    if args.json {
        output::json(&report);
    } else {
        for (key, value) in report.as_object().into_iter().flatten() {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            output::line(format!("{key:<13} {value}"));
        }
    }
    Ok(())
}
