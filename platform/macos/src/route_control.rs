//! [`MacosRoutes`]: the static routes wgmesh keeps through its utun, with `route` and `netstat`.

use crate::commands;
use crate::routes::parse_owned_routes;
use crate::{MacosError, RUN_DIR, Runner, Utun, read_utun};
use ipnet::IpNet;
use std::path::PathBuf;
use wgmesh_device::RouteControl;

/// What macOS `route` says on stderr when adding a route that exists (`warn("writing to routing
/// socket")` with EEXIST's text) …
pub(crate) const EXISTS: &[&str] = &["File exists"];
/// … and when deleting one that does not: ESRCH's text from the same `warn`, or the "not in
/// table" route(8) prints for ESRCH on its own report line.
const NOT_IN_TABLE: &[&str] = &["No such process", "not in table"];

/// Routes through the mesh interface's utun. "Owned" means: through our utun with our utun as the
/// gateway, which is what `route add … -interface utunN` makes (see
/// [`parse_owned_routes`](crate::routes::parse_owned_routes)): macOS has no route protocol number,
/// and nothing but our wireguard-go uses our utun.
#[derive(Debug, Clone)]
pub struct MacosRoutes {
    interface: String,
    run_dir: PathBuf,
    runner: Runner,
    interface_prefixes: Vec<IpNet>,
}

impl MacosRoutes {
    pub fn new(interface: &str, runner: Runner) -> Self {
        Self {
            interface: interface.to_owned(),
            run_dir: PathBuf::from(RUN_DIR),
            runner,
            interface_prefixes: Vec::new(),
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

    /// Routes through the utun that are the interface's own, not ours to remove: the mesh
    /// prefixes, which the host adds because a point-to-point utun gets no network route from
    /// its address (see [`plan_prefix_routes`](crate::host::plan_prefix_routes)).
    #[must_use]
    pub fn with_interface_prefixes(mut self, prefixes: &[IpNet]) -> Self {
        self.interface_prefixes = prefixes.iter().map(IpNet::trunc).collect();
        self
    }

    fn route(&self, command: &crate::CommandLine, benign: &[&str]) -> std::io::Result<()> {
        run_route(&self.runner, &self.interface, command, benign).map_err(Into::into)
    }
}

/// Runs `route`; an error whose stderr says one of `benign` means "already so" and is success.
/// macOS `route` exits 0 even when the kernel refused (`newroute` ends in `exit(0)`), so its
/// stderr decides, not its exit status.
pub(crate) fn run_route(
    runner: &Runner,
    interface: &str,
    command: &crate::CommandLine,
    benign: &[&str],
) -> Result<(), MacosError> {
    match runner.run_quiet_on_success(command) {
        Ok(_) => {
            tracing::info!(%interface, command = %command.display(), "route changed");
            Ok(())
        }
        Err(MacosError::Command { ref stderr, .. })
            if benign.iter().any(|b| stderr.contains(b)) =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    }
}

impl RouteControl for MacosRoutes {
    fn owned_routes(&mut self) -> std::io::Result<Vec<IpNet>> {
        let utun = self.utun()?;
        let mut routes = Vec::new();
        for ipv6 in [false, true] {
            let table = self.runner.run(&commands::list_routes(ipv6))?;
            routes.extend(
                parse_owned_routes(&table, utun.as_str())
                    .into_iter()
                    .filter(|route| !self.interface_prefixes.contains(route)),
            );
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
