use super::GreError;

/// Per-tunnel counters, after `show interface tunnel0`: traffic in and out, keepalives,
/// and one counter per drop reason, so that every rejection is both a typed [`GreError`]
/// and a counter that moved.
///
/// Byte counts are payload (passenger) bytes, without delivery and GRE headers.
/// Keepalives are counted apart from data packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GreCounters {
    /// Data packets delivered.
    pub packets_in: u64,
    /// Payload bytes delivered.
    pub bytes_in: u64,
    /// Data packets encapsulated.
    pub packets_out: u64,
    /// Payload bytes encapsulated.
    pub bytes_out: u64,
    /// Keepalives sent (written by `poll_transmit`).
    pub keepalives_sent: u64,
    /// Our keepalives that came back.
    pub keepalives_returned: u64,
    /// The peer's keepalives handed back for forwarding.
    pub keepalives_forwarded: u64,
    /// Line protocol changes, up or down (IOS "carrier transitions").
    pub line_protocol_transitions: u64,

    /// In: malformed delivery or GRE headers (checksum errors apart).
    pub malformed: u64,
    /// In: GRE checksum errors.
    pub checksum_errors: u64,
    /// In: not GRE, or fragments.
    pub not_gre: u64,
    /// In: addresses not the tunnel's.
    pub wrong_endpoints: u64,
    /// In: key mismatches.
    pub key_mismatch: u64,
    /// In: duplicates and reordered packets (sequencing).
    pub out_of_sequence: u64,
    /// In: data without a sequence number (sequencing).
    pub missing_sequence: u64,
    /// In: data dropped because line protocol is down.
    pub down_drops_in: u64,
    /// Out: data refused because line protocol is down.
    pub down_drops_out: u64,
    /// Out: payloads larger than the tunnel MTU.
    pub too_big: u64,
    /// Out: output buffers too small, or payloads a delivery header cannot hold.
    pub buffer_too_small: u64,
}

impl GreCounters {
    /// All inbound drops.
    #[must_use]
    pub const fn input_errors(&self) -> u64 {
        self.malformed
            .saturating_add(self.checksum_errors)
            .saturating_add(self.not_gre)
            .saturating_add(self.wrong_endpoints)
            .saturating_add(self.key_mismatch)
            .saturating_add(self.out_of_sequence)
            .saturating_add(self.missing_sequence)
            .saturating_add(self.down_drops_in)
    }

    /// All outbound drops.
    #[must_use]
    pub const fn output_drops(&self) -> u64 {
        self.down_drops_out
            .saturating_add(self.too_big)
            .saturating_add(self.buffer_too_small)
    }

    pub(super) fn inbound_error(&mut self, e: GreError) {
        let c = match e {
            GreError::Malformed(crate::wire::WireError::BadChecksum) => &mut self.checksum_errors,
            GreError::NotGre | GreError::Fragment => &mut self.not_gre,
            GreError::WrongEndpoints => &mut self.wrong_endpoints,
            GreError::KeyMismatch => &mut self.key_mismatch,
            GreError::OutOfSequence => &mut self.out_of_sequence,
            GreError::MissingSequence => &mut self.missing_sequence,
            GreError::LineProtocolDown => &mut self.down_drops_in,
            _ => &mut self.malformed,
        };
        bump(c);
    }

    pub(super) fn outbound_error(&mut self, e: GreError) {
        let c = match e {
            GreError::LineProtocolDown => &mut self.down_drops_out,
            GreError::TooBig { .. } => &mut self.too_big,
            _ => &mut self.buffer_too_small,
        };
        bump(c);
    }
}

pub(super) fn bump(c: &mut u64) {
    *c = c.saturating_add(1);
}

pub(super) fn add(c: &mut u64, n: usize) {
    *c = c.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
}
