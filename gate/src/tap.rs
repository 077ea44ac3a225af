//! The telemetry tap: which accepted PUBLISHes become ingest records, and
//! what a record holds — the same in both shapes.

use gatehouse_config::IngestSettings;
use gatehouse_ingest::Record;

/// `[ingest] topic_filter`, applied to PUBLISHes the rules allowed.
#[derive(Debug, Clone)]
pub struct TelemetryTap {
    filter: String,
}

impl TelemetryTap {
    pub fn new(settings: &IngestSettings) -> TelemetryTap {
        TelemetryTap {
            filter: settings.topic_filter.clone(),
        }
    }

    /// `topic` as text when PUBLISHes on it are ingested (inside the filter;
    /// a topic that is not UTF-8 never is). A shape that checks this first,
    /// before anything costlier, builds the record from what it returns.
    pub fn ingested<'t>(&self, topic: &'t [u8]) -> Option<&'t str> {
        std::str::from_utf8(topic)
            .ok()
            .filter(|t| gatehouse_acl::topic_matches_filter(t, &self.filter))
    }

    /// The record for a PUBLISH on `topic` from the gateway whose
    /// certificate CN is `gateway_code`, received now; `None` when the topic
    /// is not ingested.
    pub fn take(
        &self,
        gateway_code: &str,
        topic: &[u8],
        payload: impl Into<Vec<u8>>,
    ) -> Option<Record> {
        let topic = self.ingested(topic)?;
        Some(Record::new(gateway_code, topic, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_topics_inside_the_filter_become_records() {
        let tap = TelemetryTap::new(&gatehouse_config::Config::defaults().ingest);
        let r = tap
            .take("GW1", b"telemetry/GW1/data", &b"{\"v\":1}"[..])
            .expect("inside the default filter");
        assert_eq!(
            (r.gateway_code.as_str(), r.topic.as_str()),
            ("GW1", "telemetry/GW1/data")
        );
        assert_eq!(r.payload, b"{\"v\":1}");
        assert_eq!(
            tap.ingested(b"telemetry/GW1/data"),
            Some("telemetry/GW1/data")
        );
        for topic in [&b"other/GW1/data"[..], b"telemetry/\xff/data"] {
            assert_eq!(tap.ingested(topic), None);
            assert!(tap.take("GW1", topic, &b"x"[..]).is_none());
        }
    }
}
