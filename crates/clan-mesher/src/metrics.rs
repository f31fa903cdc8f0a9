//! Counters of one node: payload bytes per peer, direction and message kind, records accepted
//! and rejected by reason, content fetches; rendered as Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::policy::RejectReason;

/// Whether bytes went out or came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Sent,
    Received,
}

/// A snapshot of a node's counters.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Bytes of frames (length prefix included) by (peer, direction, message kind).
    pub traffic: BTreeMap<(String, Direction, &'static str), u64>,
    pub accepted: u64,
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Content fetch requests sent.
    pub fetches: u64,
}

/// Message kinds that make up anti-entropy (not announcements or content).
pub const ANTI_ENTROPY_KINDS: [&str; 3] = ["digest", "nodes", "in_sync"];

impl Metrics {
    pub fn count_traffic(
        &mut self,
        peer: &libp2p::PeerId,
        direction: Direction,
        kind: &'static str,
        bytes: usize,
    ) {
        *self
            .traffic
            .entry((peer.to_string(), direction, kind))
            .or_default() += bytes as u64;
    }

    pub fn reject(&mut self, reason: RejectReason) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected.get(&reason).copied().unwrap_or(0)
    }

    /// Total bytes in `direction` over messages whose kind is in `kinds`.
    pub fn bytes(&self, direction: Direction, kinds: &[&str]) -> u64 {
        self.traffic
            .iter()
            .filter(|((_, dir, kind), _)| *dir == direction && kinds.contains(kind))
            .map(|(_, bytes)| bytes)
            .sum()
    }

    /// Prometheus text exposition, with the gauges the caller knows.
    pub fn render(&self, files: usize, peers: usize) -> String {
        let mut out = String::new();
        for (direction, metric) in [(Direction::Sent, "sent"), (Direction::Received, "received")] {
            let _ = writeln!(out, "# TYPE clan_mesher_bytes_{metric}_total counter");
            for ((peer, dir, kind), bytes) in &self.traffic {
                if *dir == direction {
                    let _ = writeln!(out, "clan_mesher_bytes_{metric}_total{{peer=\"{peer}\",kind=\"{kind}\"}} {bytes}");
                }
            }
        }
        let _ = writeln!(out, "# TYPE clan_mesher_records_accepted_total counter");
        let _ = writeln!(out, "clan_mesher_records_accepted_total {}", self.accepted);
        let _ = writeln!(out, "# TYPE clan_mesher_records_rejected_total counter");
        for reason in RejectReason::ALL {
            let _ = writeln!(
                out,
                "clan_mesher_records_rejected_total{{reason=\"{reason}\"}} {}",
                self.rejected(reason)
            );
        }
        let _ = writeln!(out, "# TYPE clan_mesher_fetches_total counter");
        let _ = writeln!(out, "clan_mesher_fetches_total {}", self.fetches);
        let _ = writeln!(
            out,
            "# TYPE clan_mesher_files gauge\nclan_mesher_files {files}"
        );
        let _ = writeln!(
            out,
            "# TYPE clan_mesher_peers gauge\nclan_mesher_peers {peers}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_reason_and_per_peer_traffic() {
        let mut metrics = Metrics::default();
        let peer = libp2p::PeerId::random();
        metrics.count_traffic(&peer, Direction::Sent, "digest", 25);
        metrics.count_traffic(&peer, Direction::Sent, "digest", 25);
        metrics.reject(RejectReason::Stale);
        let text = metrics.render(3, 1);
        assert!(text.contains(&format!(
            "clan_mesher_bytes_sent_total{{peer=\"{peer}\",kind=\"digest\"}} 50"
        )));
        assert!(text.contains("clan_mesher_records_rejected_total{reason=\"stale\"} 1"));
        assert!(text.contains("clan_mesher_records_rejected_total{reason=\"bad_signature\"} 0"));
        assert!(text.contains("clan_mesher_files 3"));
        assert_eq!(metrics.bytes(Direction::Sent, &ANTI_ENTROPY_KINDS), 50);
    }
}
