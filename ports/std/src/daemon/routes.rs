//! Routes into the TUN device, through the `ip` command.
//!
//! Two kinds, both `proto static` routes to a crypto map entry's remote network:
//!
//! * **acquire routes** (metric [`ACQUIRE_METRIC`]): installed at start for every static
//!   crypto map entry and kept until exit. Without them no packet for the remote network
//!   would ever enter the TUN, so nothing could trigger IKE (on IOS the crypto map sits
//!   on the outside interface, in the path of the normal routes; here the TUN is that
//!   path).
//! * **reverse routes** (RRI, metric [`RRI_METRIC`], `reverse_route = true`): added when
//!   a child SA pair comes up, for its negotiated remote network, and removed when the
//!   last pair for that network goes, as IOS `reverse-route` does.
//!
//! Why the `ip` command rather than a netlink socket: routes change only when SAs come
//! and go (not per packet); `ip` needs no unsafe code and no extra crate, and each
//! change is logged as the exact command an administrator would type to repeat or undo
//! it. A gateway with thousands of SAs churning per second would want netlink.

use std::fmt;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use tracing::{info, warn};

/// Metric of the acquire routes (behind any reverse route).
pub const ACQUIRE_METRIC: u32 = 1024;
/// Metric of the reverse routes.
pub const RRI_METRIC: u32 = 10;

/// Which kind of route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// Installed at start so traffic can trigger IKE.
    Acquire,
    /// Follows the SAs (reverse route injection).
    Reverse,
}

/// One installed route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub prefix: (IpAddr, u8),
    /// Route metric.
    pub metric: u32,
    /// Kind.
    pub kind: RouteKind,
    /// Users (SA pairs, or 1 for an acquire route).
    pub refs: u32,
    /// The crypto map entry it belongs to.
    pub map: u32,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} metric {}",
            self.prefix.0, self.prefix.1, self.metric
        )
    }
}

/// The routes this daemon installed.
#[derive(Debug)]
pub struct Routes {
    tun: String,
    src: Option<IpAddr>,
    installed: Vec<Route>,
}

/// Runs `ip ARGS` (iproute2); the error names the command and carries its stderr.
pub(super) fn ip<S: AsRef<str>>(args: &[S]) -> Result<(), String> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = Command::new("ip")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Routes {
    /// Routes through `tun`, with `src` as their preferred source.
    #[must_use]
    pub fn new(tun: &str, src: Option<IpAddr>) -> Self {
        Self {
            tun: tun.to_string(),
            src,
            installed: Vec::new(),
        }
    }

    /// The installed routes.
    #[must_use]
    pub fn installed(&self) -> &[Route] {
        &self.installed
    }

    /// The preferred source address.
    #[must_use]
    pub fn source(&self) -> Option<IpAddr> {
        self.src
    }

    fn args(&self, verb: &str, prefix: (IpAddr, u8), metric: u32) -> Vec<String> {
        let mut a = vec![
            if prefix.0.is_ipv6() { "-6" } else { "-4" }.to_string(),
            "route".into(),
            verb.into(),
            format!("{}/{}", prefix.0, prefix.1),
            "dev".into(),
            self.tun.clone(),
        ];
        if verb != "del" {
            if let Some(s) = self.src.filter(|s| s.is_ipv6() == prefix.0.is_ipv6()) {
                a.push("src".into());
                a.push(s.to_string());
            }
            a.push("proto".into());
            a.push("static".into());
        }
        a.push("metric".into());
        a.push(metric.to_string());
        a
    }

    /// Adds (or takes another reference on) a route.
    pub fn add(&mut self, prefix: (IpAddr, u8), kind: RouteKind, map: u32) {
        let metric = match kind {
            RouteKind::Acquire => ACQUIRE_METRIC,
            RouteKind::Reverse => RRI_METRIC,
        };
        if let Some(r) = self
            .installed
            .iter_mut()
            .find(|r| r.prefix == prefix && r.metric == metric)
        {
            r.refs += 1;
            return;
        }
        let args = self.args("replace", prefix, metric);
        match ip(&args) {
            Ok(()) => {
                info!(target: "ipsec", "IPSEC(rte_mgr): VPN Route Added {}/{} via {} metric {metric} ({})",
                    prefix.0, prefix.1, self.tun,
                    if kind == RouteKind::Acquire { "acquire" } else { "reverse route" });
                self.installed.push(Route {
                    prefix,
                    metric,
                    kind,
                    refs: 1,
                    map,
                });
            }
            Err(e) => warn!(target: "ipsec", "IPSEC(rte_mgr): route add failed: {e}"),
        }
    }

    /// Drops one reference on a reverse route; removes it with the last one.
    pub fn release(&mut self, prefix: (IpAddr, u8)) {
        let Some(i) = self
            .installed
            .iter()
            .position(|r| r.prefix == prefix && r.kind == RouteKind::Reverse)
        else {
            return;
        };
        if let Some(r) = self.installed.get_mut(i) {
            r.refs = r.refs.saturating_sub(1);
            if r.refs > 0 {
                return;
            }
        }
        let r = self.installed.remove(i);
        self.delete(&r);
    }

    fn delete(&self, r: &Route) {
        match ip(&self.args("del", r.prefix, r.metric)) {
            Ok(()) => {
                info!(target: "ipsec", "IPSEC(rte_mgr): VPN Route Removed {}/{} via {} metric {}",
                r.prefix.0, r.prefix.1, self.tun, r.metric)
            }
            // The TUN may already be gone (its routes with it).
            Err(e) => warn!(target: "ipsec", "IPSEC(rte_mgr): route removal failed: {e}"),
        }
    }

    /// Removes every route this daemon installed.
    pub fn remove_all(&mut self) {
        for r in std::mem::take(&mut self.installed) {
            self.delete(&r);
        }
    }
}
