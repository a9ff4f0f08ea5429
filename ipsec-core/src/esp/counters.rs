use super::EspError;

/// Per-SA packet counters, modelled on IOS `show crypto ipsec sa [detail]`.
///
/// The first block mirrors the summary lines (`#pkts encaps: 4, #pkts encrypt: 4,
/// #pkts digest: 4`); the second names every drop reason, so that each rejection is both a
/// typed [`EspError`] and a counter that moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EspCounters {
    /// Packets encapsulated (`#pkts encaps`).
    pub encaps: u64,
    /// Packets encrypted (`#pkts encrypt`); NULL encryption does not count.
    pub encrypt: u64,
    /// Packets given an ICV (`#pkts digest`).
    pub digest: u64,
    /// Packets decapsulated and delivered (`#pkts decaps`).
    pub decaps: u64,
    /// Packets decrypted (`#pkts decrypt`), counted like `verify`.
    pub decrypt: u64,
    /// Packets whose ICV verified (`#pkts verify`), including those later dropped for
    /// their padding, next header or selectors.
    pub verify: u64,
    /// Payload bytes sealed (before ESP overhead).
    pub bytes_out: u64,
    /// Payload bytes delivered (after removing ESP overhead).
    pub bytes_in: u64,
    /// Outbound failures of any kind (`#send errors`).
    pub send_errors: u64,
    /// Inbound failures of any kind (`#recv errors`).
    pub recv_errors: u64,

    /// `#pkts replay failed (rcv)`: duplicates.
    pub replay_failed: u64,
    /// Sequence numbers left of the window.
    pub replay_too_old: u64,
    /// `#pkts verify failed`: ICV or tag mismatch.
    pub verify_failed: u64,
    /// `#pkts invalid len (rcv)`: truncated or not a whole number of blocks.
    pub invalid_len: u64,
    /// Padding bytes not 1, 2, 3, ... or pad length too large.
    pub bad_padding: u64,
    /// `#pkts invalid prot (recv)`: next header not allowed in this mode.
    pub bad_next_header: u64,
    /// Dummy packets (next header 59) discarded.
    pub dummy: u64,
    /// `#pkts invalid identity (recv)`: inner packet outside the SA's selectors.
    pub policy_mismatch: u64,
    /// Malformed outer or inner headers.
    pub malformed: u64,
    /// Packets for another SPI handed to this SA (a lookup bug in the caller, or a
    /// forged packet).
    pub invalid_spi: u64,
    /// Packets that are not ESP for this SA (IKE, keepalives, another UDP port).
    pub not_esp: u64,
    /// `#pkts replay rollover (send)`: refused because the sequence number would wrap.
    pub seq_overflow: u64,
    /// Refused because the hard lifetime had expired.
    pub expired: u64,
    /// Refused because the caller's buffer was too small.
    pub buffer_too_small: u64,
    /// `#pkts internal err`: provider failures and misuse of the API (wrong direction,
    /// invalid configuration), which no packet can cause on its own.
    pub internal: u64,
}

impl EspCounters {
    /// Counts a failed outbound operation under `send_errors` and its reason.
    pub(crate) fn send_error(&mut self, e: EspError) {
        self.send_errors = self.send_errors.saturating_add(1);
        self.reason(e);
    }

    /// Counts a failed inbound operation under `recv_errors` and its reason.
    pub(crate) fn recv_error(&mut self, e: EspError) {
        self.recv_errors = self.recv_errors.saturating_add(1);
        self.reason(e);
    }

    fn reason(&mut self, e: EspError) {
        let c = match e {
            EspError::Replayed => &mut self.replay_failed,
            EspError::TooOld => &mut self.replay_too_old,
            EspError::IcvMismatch => &mut self.verify_failed,
            EspError::InvalidLength => &mut self.invalid_len,
            EspError::BadPadding => &mut self.bad_padding,
            EspError::BadNextHeader => &mut self.bad_next_header,
            EspError::DummyPacket => &mut self.dummy,
            EspError::PolicyMismatch => &mut self.policy_mismatch,
            EspError::Malformed(_) => &mut self.malformed,
            EspError::SpiMismatch => &mut self.invalid_spi,
            EspError::NotEsp => &mut self.not_esp,
            EspError::SequenceOverflow => &mut self.seq_overflow,
            EspError::Expired => &mut self.expired,
            EspError::BufferTooSmall { .. } => &mut self.buffer_too_small,
            EspError::WrongDirection | EspError::InvalidConfig | EspError::Crypto(_) => {
                &mut self.internal
            }
        };
        *c = c.saturating_add(1);
    }
}

/// Increments a counter, saturating.
pub(crate) fn bump(c: &mut u64) {
    *c = c.saturating_add(1);
}
