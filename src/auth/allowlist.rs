//! IP allowlists: the networks a trigger or an API key may be used from
//! (`allowed_ips` in `triggers.toml` and `keys.toml`).
//!
//! Policy: an entry is a CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a bare
//! address (one host: /32 or /128). Addresses are compared in canonical
//! form: an IPv4-mapped IPv6 client (`::ffff:10.1.2.3`) is the IPv4
//! client, and an IPv4-mapped rule is the IPv4 rule, so a dual-stack
//! listener cannot be used to step around an IPv4 list. The address judged
//! is the one the per-IP limiter uses (`limits::client_ip`: the socket
//! peer, or what a configured trusted proxy forwarded).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// A non-empty list of networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpAllowlist {
    nets: Vec<IpNet>,
}

impl IpAllowlist {
    /// Parses `allowed_ips`. An empty list is `Ok(None)`: no restriction.
    /// Each entry that is not a CIDR or an address is an `Err` with its
    /// index and what is wrong (every one is reported).
    pub fn parse(entries: &[String]) -> Result<Option<IpAllowlist>, Vec<(usize, String)>> {
        let mut nets = Vec::new();
        let mut errors = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match parse_net(entry.trim()) {
                Some(net) => nets.push(net),
                None => errors.push((
                    i,
                    format!(
                        "`{entry}` is not an IP network (e.g. `10.0.0.0/8`, `2001:db8::/32`) or an address"
                    ),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok((!nets.is_empty()).then_some(IpAllowlist { nets }))
    }

    /// Whether `ip` is inside one of the networks.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    let net = match s.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(s.parse::<IpAddr>().ok()?),
    };
    // Host bits are ignored (`10.1.2.3/8` is `10.0.0.0/8`).
    Some(canonical_net(net.trunc()))
}

/// `::ffff:a.b.c.d` as `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// An IPv4-mapped rule (`::ffff:10.0.0.0/104`) as its IPv4 rule.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> IpAllowlist {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        IpAllowlist::parse(&entries).unwrap().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_and_bare_addresses_are_networks() {
        let l = list(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"]);
        assert!(l.allows(ip("10.200.3.4")));
        assert!(!l.allows(ip("11.0.0.1")));
        assert!(l.allows(ip("192.0.2.7")));
        assert!(!l.allows(ip("192.0.2.8")), "a bare address is one host");
        assert!(l.allows(ip("2001:db8:ffff::1")));
        assert!(!l.allows(ip("2001:db9::1")));
        assert!(l.allows(ip("::1")));
        assert!(!l.allows(ip("::2")));
    }

    #[test]
    fn ipv4_mapped_clients_and_rules_are_ipv4() {
        let l = list(&["10.0.0.0/8"]);
        assert!(l.allows(ip("::ffff:10.1.2.3")));
        assert!(!l.allows(ip("::ffff:11.1.2.3")));
        let mapped = list(&["::ffff:192.0.2.0/120"]);
        assert!(mapped.allows(ip("192.0.2.9")));
        assert!(mapped.allows(ip("::ffff:192.0.2.9")));
        assert!(!mapped.allows(ip("192.0.3.9")));
    }

    #[test]
    fn host_bits_are_ignored_and_bad_entries_are_all_reported() {
        assert!(list(&["10.1.2.3/8"]).allows(ip("10.9.9.9")));
        assert_eq!(IpAllowlist::parse(&[]), Ok(None));
        let bad: Vec<String> = ["nonsense", "10.0.0.0/8", "10.0.0.0/33", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let errors = IpAllowlist::parse(&bad).unwrap_err();
        assert_eq!(
            errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 2, 3]
        );
        assert!(errors[0].1.contains("`nonsense`"), "{errors:?}");
    }
}
