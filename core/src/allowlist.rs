//! The read allowlist: which client addresses may read and verify secrets.
//!
//! Entries are IPv4 or IPv6 addresses or CIDRs, separated by commas. An empty list denies every
//! client (fail closed), and any malformed entry makes the whole list an error that names it:
//! a typo must never silently shrink or widen access. IPv4-mapped IPv6 clients (`::ffff:a.b.c.d`,
//! as seen on dual-stack sockets) are matched as the IPv4 address they carry.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    nets: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    #[error("allowlist entry {position} is empty")]
    EmptyEntry { position: usize },
    #[error("allowlist entry {entry:?} is not an IP address or CIDR")]
    Invalid { entry: String },
}

impl Allowlist {
    /// Parses a comma-separated list. A blank string is the empty (deny-all) list.
    pub fn parse(spec: &str) -> Result<Self, AllowlistError> {
        if spec.trim().is_empty() {
            return Ok(Self::default());
        }
        let nets = spec
            .split(',')
            .enumerate()
            .map(|(i, raw)| parse_entry(raw.trim(), i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { nets })
    }

    pub fn from_nets(nets: Vec<IpNet>) -> Self {
        Self { nets: nets.into_iter().map(|n| n.trunc()).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    pub fn allows(&self, client: IpAddr) -> bool {
        let client = canonical(client);
        self.nets.iter().any(|net| net.contains(&client))
    }
}

/// Unwraps IPv4-mapped IPv6 addresses to IPv4; other addresses are unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn parse_entry(entry: &str, position: usize) -> Result<IpNet, AllowlistError> {
    if entry.is_empty() {
        return Err(AllowlistError::EmptyEntry { position });
    }
    let invalid = || AllowlistError::Invalid { entry: entry.to_owned() };
    if let Some((addr, prefix)) = entry.split_once('/') {
        // The address goes through std's parser, as host entries do: it refuses leading zeros,
        // which inet_aton-style tools read as octal (`010.0.0.0/8` is 8.0.0.0/8 there) and ipnet's
        // own parser would silently take as decimal.
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        let net = IpNet::new(addr, prefix).map_err(|_| invalid())?;
        // Host bits are ignored (10.1.2.3/8 is 10.0.0.0/8), as in most firewalls.
        Ok(canonical_net(net).trunc())
    } else {
        let ip: IpAddr = entry.parse().map_err(|_| invalid())?;
        let ip = canonical(ip);
        Ok(IpNet::from(ip))
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) is stored as its IPv4 form so it matches
/// canonicalised clients.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(IpNet::V6(v6), IpNet::V4),
            None => IpNet::V6(v6),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_list_denies_everything() {
        for spec in ["", "   ", "\t"] {
            let list = Allowlist::parse(spec).unwrap();
            assert!(list.is_empty());
            for c in ["127.0.0.1", "0.0.0.0", "::1", "10.0.0.1"] {
                assert!(!list.allows(ip(c)));
            }
        }
    }

    #[test]
    fn single_hosts_and_prefix_edges() {
        let l = Allowlist::parse("10.0.0.5, 192.168.0.0/24,2001:db8::/32 ,::1").unwrap();
        assert!(l.allows(ip("10.0.0.5")));
        assert!(!l.allows(ip("10.0.0.6")));
        assert!(l.allows(ip("192.168.0.0")));
        assert!(l.allows(ip("192.168.0.255")));
        assert!(!l.allows(ip("192.168.1.0")));
        assert!(l.allows(ip("2001:db8:ffff::1")));
        assert!(!l.allows(ip("2001:db9::1")));
        assert!(l.allows(ip("::1")));
        assert!(!l.allows(ip("::2")));
    }

    #[test]
    fn slash_zero_and_full_length_prefixes() {
        let all4 = Allowlist::parse("0.0.0.0/0").unwrap();
        assert!(all4.allows(ip("255.255.255.255")) && all4.allows(ip("1.2.3.4")));
        assert!(!all4.allows(ip("2001:db8::1")), "an IPv4 /0 does not admit IPv6 clients");
        let all6 = Allowlist::parse("::/0").unwrap();
        assert!(all6.allows(ip("2001:db8::1")));
        let host32 = Allowlist::parse("10.1.2.3/32").unwrap();
        assert!(host32.allows(ip("10.1.2.3")) && !host32.allows(ip("10.1.2.4")));
        let host128 = Allowlist::parse("2001:db8::7/128").unwrap();
        assert!(host128.allows(ip("2001:db8::7")) && !host128.allows(ip("2001:db8::8")));
    }

    #[test]
    fn mapped_ipv6_clients_match_as_ipv4() {
        let l = Allowlist::parse("10.0.0.0/8").unwrap();
        assert!(l.allows(ip("::ffff:10.9.8.7")));
        assert!(!l.allows(ip("::ffff:11.0.0.1")));
        let mapped_entry = Allowlist::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped_entry.allows(ip("10.1.1.1")));
        assert!(mapped_entry.allows(ip("::ffff:10.1.1.1")));
        assert!(!mapped_entry.allows(ip("11.1.1.1")));
        let mapped_host = Allowlist::parse("::ffff:127.0.0.1").unwrap();
        assert!(mapped_host.allows(ip("127.0.0.1")));
    }

    #[test]
    fn host_bits_in_a_cidr_are_ignored() {
        let l = Allowlist::parse("10.1.2.3/8").unwrap();
        assert_eq!(l.nets()[0].to_string(), "10.0.0.0/8");
        assert!(l.allows(ip("10.200.0.1")));
    }

    #[test]
    fn malformed_entries_are_errors_naming_the_entry() {
        let cases = [
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "localhost",
            "10.0.0",
            "10.0.0.256",
            "1.2.3.4/",
            "/8",
            "1.2.3.4/-1",
            "1.2.3.4 5.6.7.8",
            "10.0.0.1/8/8",
            "*",
            "garbage",
            "fe80::1%eth0",
            "010.0.0.1/32",
            "192.168.010.0/24",
            "10.0.0.00/8",
            "::ffff:010.0.0.1/128",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
        ];
        for bad in cases {
            let err = Allowlist::parse(&format!("127.0.0.1,{bad}")).unwrap_err();
            assert_eq!(err, AllowlistError::Invalid { entry: bad.to_owned() }, "{bad}");
            assert!(err.to_string().contains(bad));
        }
        assert_eq!(Allowlist::parse("127.0.0.1,,10.0.0.1"), Err(AllowlistError::EmptyEntry { position: 2 }));
        assert_eq!(Allowlist::parse("127.0.0.1,"), Err(AllowlistError::EmptyEntry { position: 2 }));
    }

    proptest! {
        #[test]
        fn v4_prefix_membership_matches_mask_arithmetic(net in any::<u32>(), len in 0u8..=32, client in any::<u32>()) {
            let spec = format!("{}/{len}", Ipv4Addr::from(net));
            let l = Allowlist::parse(&spec).unwrap();
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let expected = (client & mask) == (net & mask);
            prop_assert_eq!(l.allows(IpAddr::V4(Ipv4Addr::from(client))), expected);
            prop_assert_eq!(l.allows(IpAddr::V6(Ipv4Addr::from(client).to_ipv6_mapped())), expected);
        }

        #[test]
        fn v6_prefix_membership_matches_mask_arithmetic(net in any::<u128>(), len in 0u8..=128, client in any::<u128>()) {
            let net_ip = Ipv6Addr::from(net);
            prop_assume!(net_ip.to_ipv4_mapped().is_none());
            let l = Allowlist::parse(&format!("{net_ip}/{len}")).unwrap();
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            let client_ip = Ipv6Addr::from(client);
            prop_assume!(client_ip.to_ipv4_mapped().is_none());
            prop_assert_eq!(l.allows(IpAddr::V6(client_ip)), (client & mask) == (net & mask));
        }

        #[test]
        fn arbitrary_text_never_panics_and_never_yields_an_empty_list(spec in "\\PC{1,64}") {
            if let Ok(l) = Allowlist::parse(&spec) {
                prop_assert!(l.is_empty() == spec.trim().is_empty());
            }
        }
    }
}
