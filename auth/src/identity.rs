/// The two kinds of client certificate in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Shared factory certificate: may only touch the provisioning topics.
    Bootstrap,
    /// Per-gateway certificate, CN = gateway_code.
    Operational,
}

impl Kind {
    /// Lower-case name used in logs, metrics labels and config sections.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bootstrap => "bootstrap",
            Kind::Operational => "operational",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
