//! TCP ports listening inside the sandbox, from /proc/net/tcp{,6}.

use paddock_proto::v1::Port;

pub fn listening() -> Vec<Port> {
    let mut out: Vec<Port> = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            if let Some(p) = parse_line(line, v6) {
                if !out
                    .iter()
                    .any(|o| o.port == p.port && o.address == p.address)
                {
                    out.push(p);
                }
            }
        }
    }
    out.sort_by_key(|p| p.port);
    out
}

fn parse_line(line: &str, v6: bool) -> Option<Port> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 4 || f[3] != "0A" {
        return None;
    }
    let (addr, port) = f[1].split_once(':')?;
    let port = u32::from_str_radix(port, 16).ok()?;
    let address = if v6 {
        let bytes: Vec<u8> = (0..16)
            .filter_map(|i| u8::from_str_radix(addr.get(i * 2..i * 2 + 2)?, 16).ok())
            .collect();
        if bytes.len() != 16 {
            return None;
        }
        // /proc prints the address as four host-order 32-bit words.
        let mut b = [0u8; 16];
        for w in 0..4 {
            for i in 0..4 {
                b[w * 4 + i] = bytes[w * 4 + 3 - i];
            }
        }
        std::net::Ipv6Addr::from(b).to_string()
    } else {
        let n = u32::from_str_radix(addr, 16).ok()?;
        std::net::Ipv4Addr::from(n.swap_bytes()).to_string()
    };
    Some(Port {
        port,
        address,
        protocol: "tcp".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_listen() {
        let l = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        let p = parse_line(l, false).unwrap();
        assert_eq!(p.port, 8080);
        assert_eq!(p.address, "127.0.0.1");
    }

    #[test]
    fn skips_established() {
        let l = "   0: 0100007F:1F90 0100007F:D000 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert!(parse_line(l, false).is_none());
    }

    #[test]
    fn parses_v6_any() {
        let l = "   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        let p = parse_line(l, true).unwrap();
        assert_eq!(p.port, 80);
        assert_eq!(p.address, "::");
    }
}
