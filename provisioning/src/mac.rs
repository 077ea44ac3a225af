//! MAC addresses as the firmware sends them, and the gateway code derived
//! from them.

use std::fmt;

/// A MAC address, normalised to lower-case `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mac(String);

impl Mac {
    /// Accepts six hex octets separated by `:` (any case, as
    /// `WiFi.macAddress()` prints them) or `-`. Everything else is refused.
    pub fn parse(text: &str) -> Option<Mac> {
        let text = text.trim();
        let parts: Vec<&str> = if text.contains(':') {
            text.split(':').collect()
        } else {
            text.split('-').collect()
        };
        if parts.len() != 6
            || !parts
                .iter()
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return None;
        }
        Some(Mac(parts.join(":").to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Last four hex digits, upper case (`aa:bb:cc:dd:ee:ff` → `EEFF`).
    pub fn last4(&self) -> String {
        self.0[12..].replace(':', "").to_ascii_uppercase()
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `{device_id}-{last 4 hex digits of the MAC, upper case}`, the CN of the
/// gateway's operational certificate.
pub fn gateway_code(device_id: &str, mac: &Mac) -> String {
    format!("{device_id}-{}", mac.last4())
}

/// A device id: 1..=24 characters of `A-Z a-z 0-9 _ . -` (it becomes part of
/// a certificate CN and of MQTT topics, so no `/`, `+`, `#` or spaces).
pub fn valid_device_id(device_id: &str) -> bool {
    (1..=24).contains(&device_id.len())
        && device_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let m = Mac::parse("AA:BB:CC:DD:EE:FF").unwrap();
        assert_eq!(m.as_str(), "aa:bb:cc:dd:ee:ff");
        assert_eq!(
            Mac::parse("aa-bb-cc-dd-ee-0f").unwrap().as_str(),
            "aa:bb:cc:dd:ee:0f"
        );
        assert_eq!(m.last4(), "EEFF");
        assert_eq!(gateway_code("GW0001", &m), "GW0001-EEFF");
    }

    #[test]
    fn refuses_bad_macs() {
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aabbccddeeff",
            "aa:bb:cc:dd:ee:gg",
            "a:bb:cc:dd:ee:ff",
            "aa:bb:cc-dd:ee:ff",
            "aa::bb:cc:dd:ee",
        ] {
            assert!(Mac::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn device_ids() {
        assert!(valid_device_id("GW0001"));
        assert!(valid_device_id("dcu-8210.a_1"));
        for bad in ["", "a/b", "a+b", "a#", "a b", "x".repeat(25).as_str()] {
            assert!(!valid_device_id(bad), "{bad:?}");
        }
    }
}
