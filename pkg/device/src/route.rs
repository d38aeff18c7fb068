//! Routes through the mesh interface: desired vs. the ones wgmesh owns.

use ipnet::IpNet;

/// A change to the routes wgmesh owns on its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteChange {
    Add(IpNet),
    Remove(IpNet),
}

/// Compares the routes wgmesh installed (found by its route protocol number) with the ones it
/// wants: remove what is no longer wanted, add what is missing, leave the rest.
pub fn diff_routes(owned: &[IpNet], desired: &[IpNet]) -> Vec<RouteChange> {
    let mut owned: Vec<IpNet> = owned.iter().map(IpNet::trunc).collect();
    let mut desired: Vec<IpNet> = desired.iter().map(IpNet::trunc).collect();
    owned.sort();
    owned.dedup();
    desired.sort();
    desired.dedup();
    let removals = owned
        .iter()
        .filter(|r| desired.binary_search(r).is_err())
        .map(|r| RouteChange::Remove(*r));
    let additions = desired
        .iter()
        .filter(|r| owned.binary_search(r).is_err())
        .map(|r| RouteChange::Add(*r));
    removals.chain(additions).collect()
}

/// Routes and addresses on the mesh interface (rtnetlink on Linux, ifconfig/route on macOS).
///
/// Every call is idempotent: adding what exists and removing what is gone succeed.
pub trait RouteControl: Send {
    /// The routes on `interface` that carry wgmesh's route protocol number; never anyone else's.
    fn owned_routes(&mut self) -> std::io::Result<Vec<IpNet>>;
    fn add_route(&mut self, route: IpNet) -> std::io::Result<()>;
    fn remove_route(&mut self, route: IpNet) -> std::io::Result<()>;
    /// The interface was recreated with a new index (a restarted wireguard-go): routes from now
    /// on go through `index`. The old link's routes went with it.
    fn bind_interface(&mut self, index: u32) {
        let _ = index;
    }
}

/// Routes in memory for unit tests: counts writes, and can refuse one route.
#[derive(Debug, Default)]
pub struct FakeRoutes {
    pub routes: Vec<IpNet>,
    pub writes: usize,
    /// Adding this route fails.
    pub refuse: Option<IpNet>,
    /// The index from the last [`RouteControl::bind_interface`].
    pub index: u32,
}

impl RouteControl for FakeRoutes {
    fn owned_routes(&mut self) -> std::io::Result<Vec<IpNet>> {
        Ok(self.routes.clone())
    }

    fn add_route(&mut self, route: IpNet) -> std::io::Result<()> {
        if self.refuse == Some(route) {
            return Err(std::io::Error::other("refused"));
        }
        if !self.routes.contains(&route) {
            self.routes.push(route);
        }
        self.writes += 1;
        Ok(())
    }

    fn remove_route(&mut self, route: IpNet) -> std::io::Result<()> {
        self.routes.retain(|r| *r != route);
        self.writes += 1;
        Ok(())
    }

    fn bind_interface(&mut self, index: u32) {
        self.index = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(owned: &[IpNet], changes: &[RouteChange]) -> Vec<IpNet> {
        let mut routes: Vec<IpNet> = owned.iter().map(IpNet::trunc).collect();
        for change in changes {
            match change {
                RouteChange::Add(r) => routes.push(*r),
                RouteChange::Remove(r) => routes.retain(|x| x != r),
            }
        }
        routes.sort();
        routes.dedup();
        routes
    }

    fn arb_net() -> impl Strategy<Value = IpNet> {
        (any::<[u8; 4]>(), 16u8..=32).prop_map(|(o, l)| IpNet::new(o.into(), l).unwrap())
    }

    proptest! {
        #[test]
        fn route_diff_reaches_desired_then_is_empty(
            owned in proptest::collection::vec(arb_net(), 0..8),
            desired in proptest::collection::vec(arb_net(), 0..8),
        ) {
            let changes = diff_routes(&owned, &desired);
            let after = apply(&owned, &changes);
            let mut want: Vec<IpNet> = desired.iter().map(IpNet::trunc).collect();
            want.sort();
            want.dedup();
            prop_assert_eq!(&after, &want);
            prop_assert!(diff_routes(&after, &desired).is_empty());
        }
    }
}
