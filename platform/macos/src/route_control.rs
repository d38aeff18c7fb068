//! [`MacosRoutes`]: the static routes wgmesh keeps through its utun, with `route` and `netstat`.

use crate::commands;
use crate::routes::parse_owned_routes;
use crate::{MacosError, RUN_DIR, Runner, Utun, read_utun};
use ipnet::IpNet;
use std::path::PathBuf;
use wgmesh_device::RouteControl;

/// What macOS `route` prints when adding a route that exists (EEXIST) …
const EXISTS: &str = "File exists";
/// … and when deleting one that does not (ESRCH, printed by route(8) as "not in table").
const NOT_IN_TABLE: &str = "not in table";

/// Routes through the mesh interface's utun. "Owned" means: through our utun with our utun as the
/// gateway, which is what `route add … -interface utunN` makes (see
/// [`parse_owned_routes`](crate::routes::parse_owned_routes)): macOS has no route protocol number,
/// and nothing but our wireguard-go uses our utun.
#[derive(Debug, Clone)]
pub struct MacosRoutes {
    interface: String,
    run_dir: PathBuf,
    runner: Runner,
}

impl MacosRoutes {
    pub fn new(interface: &str, runner: Runner) -> Self {
        Self {
            interface: interface.to_owned(),
            run_dir: PathBuf::from(RUN_DIR),
            runner,
        }
    }

    #[must_use]
    pub fn with_run_dir(mut self, run_dir: impl Into<PathBuf>) -> Self {
        self.run_dir = run_dir.into();
        self
    }

    /// The utun, read from the name file each time: a restarted wireguard-go gets a new one.
    pub fn utun(&self) -> Result<Utun, MacosError> {
        read_utun(&self.run_dir, &self.interface)
    }

    /// Runs `route`; an error whose stderr says `benign` means "already so" and is success.
    fn route(&self, command: &crate::CommandLine, benign: &str) -> std::io::Result<()> {
        match self.runner.run(command) {
            Ok(_) => {
                tracing::info!(interface = %self.interface, command = %command.display(), "route changed");
                Ok(())
            }
            Err(MacosError::Command { ref stderr, .. }) if stderr.contains(benign) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

impl RouteControl for MacosRoutes {
    fn owned_routes(&mut self) -> std::io::Result<Vec<IpNet>> {
        let utun = self.utun()?;
        let mut routes = Vec::new();
        for ipv6 in [false, true] {
            let table = self.runner.run(&commands::list_routes(ipv6))?;
            routes.extend(parse_owned_routes(&table, utun.as_str()));
        }
        Ok(routes)
    }

    fn add_route(&mut self, route: IpNet) -> std::io::Result<()> {
        let utun = self.utun()?;
        self.route(&commands::add_route(&utun, route), EXISTS)
    }

    fn remove_route(&mut self, route: IpNet) -> std::io::Result<()> {
        let utun = self.utun()?;
        self.route(&commands::delete_route(&utun, route), NOT_IN_TABLE)
    }

    /// Nothing to bind: every call reads the current utun from the name file, and the index is
    /// not needed by `route -interface`.
    fn bind_interface(&mut self, _index: u32) {}
}
