//! Address ranges for `[console] trusted_proxies` (`10.0.0.5`, `10.0.0.0/24`, `fd00::/8`) and
//! the loopback test for `[server] listen`, shared by validation and the console adapter.

use std::net::{IpAddr, SocketAddr};

/// One address (`/32` or `/128`) or a CIDR range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `10.0.0.5`, `10.0.0.0/24`, `::1`, `fd00::/8`; host bits beyond the prefix are refused
    /// (`10.0.0.5/24` is most likely a typo for one address or for `10.0.0.0/24`).
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip.trim().parse().map_err(|_| format!("'{s}' is not an IP address or CIDR range (10.0.0.5, 10.0.0.0/24, fd00::/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("'{s}': the prefix length must be 0 to {max}")),
            },
        };
        let net = IpNet { addr, prefix };
        if net.masked(addr) != bits(addr) {
            return Err(format!("'{s}' has address bits beyond /{prefix}; write the network address or one address"));
        }
        Ok(net)
    }

    /// Whether `ip` is in the range; an IPv4-mapped IPv6 address (`::ffff:10.0.0.5`, what a
    /// dual-stack listener reports) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.masked(self.addr)
    }

    /// `ip` with its host bits (those beyond the prefix) cleared; same family as `self.addr`.
    fn masked(&self, ip: IpAddr) -> u128 {
        let width: u32 = if ip.is_ipv4() { 32 } else { 128 };
        let host_bits = width.saturating_sub(u32::from(self.prefix));
        let mask = if host_bits >= 128 { 0 } else { u128::MAX << host_bits };
        bits(ip) & mask
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// Whether a peer address is a loopback one (`127.0.0.0/8`, `::1`, or `::ffff:127.x.y.z`).
pub fn is_loopback_peer(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Whether `[server] listen` (`IP:PORT`) only accepts connections from this machine.
pub fn listen_is_loopback(listen: &str) -> bool {
    listen.parse::<SocketAddr>().is_ok_and(|a| is_loopback_peer(a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn single_addresses_and_ranges_match_what_they_cover_and_nothing_else() {
        let one = IpNet::parse("10.0.0.5").expect("one address");
        assert!(one.contains(ip("10.0.0.5")));
        assert!(one.contains(ip("::ffff:10.0.0.5")), "a dual-stack listener reports IPv4 peers mapped");
        assert!(!one.contains(ip("10.0.0.6")));
        let net = IpNet::parse("10.0.0.0/24").expect("a range");
        assert!(net.contains(ip("10.0.0.255")) && !net.contains(ip("10.0.1.0")));
        let v6 = IpNet::parse("fd00::/8").expect("v6 range");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.0.0.5")));
        let all = IpNet::parse("0.0.0.0/0").expect("everything v4");
        assert!(all.contains(ip("192.0.2.1")) && !all.contains(ip("::2")));
    }

    #[test]
    fn malformed_ranges_are_refused_with_the_reason() {
        for (s, why) in [
            ("10.0.0.5/24", "address bits beyond /24"),
            ("10.0.0.0/33", "0 to 32"),
            ("proxy.internal", "not an IP address"),
            ("10.0.0.0/x", "0 to 32"),
            ("", "not an IP address"),
        ] {
            let e = IpNet::parse(s).expect_err(s);
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn only_loopback_listen_addresses_count_as_loopback() {
        for l in ["127.0.0.1:8080", "127.0.0.2:1", "[::1]:8080"] {
            assert!(listen_is_loopback(l), "{l}");
        }
        for l in ["0.0.0.0:8080", "[::]:8080", "10.0.0.5:8080", "localhost:8080", "garbage"] {
            assert!(!listen_is_loopback(l), "{l}");
        }
        assert!(is_loopback_peer(ip("::ffff:127.0.0.1")) && !is_loopback_peer(ip("192.0.2.1")));
    }
}
