//! The numbers of NAT traversal (RFC 3947, RFC 3948), in one place.
//!
//! Values that changed between the drafts and the RFCs (payload types, encapsulation
//! modes) are given for both; [`NatTVersion`](crate::NatTVersion) picks the right pair.

/// UDP port of IKE (RFC 2408), and of IKE before the NAT-T port float.
pub const IKE_PORT: u16 = 500;

/// UDP port IKE floats to once NAT-T is negotiated, and the port of ESP-in-UDP
/// (RFC 3947 §4, RFC 3948 §2).
pub const NAT_T_PORT: u16 = 4500;

/// The non-ESP marker: four zero octets in front of an IKE message sent on port 4500, where
/// an ESP SPI would be (RFC 3948 §2.2). An SPI is never zero, so the two cannot be confused.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// The length of [`NON_ESP_MARKER`].
pub const NON_ESP_MARKER_LEN: usize = NON_ESP_MARKER.len();

/// The one octet of a NAT-keepalive packet's UDP payload (RFC 3948 §2.3).
pub const KEEPALIVE_BYTE: u8 = 0xff;

/// A NAT-keepalive packet's whole UDP payload.
pub const KEEPALIVE_PAYLOAD: [u8; 1] = [KEEPALIVE_BYTE];

/// The non-IKE marker of draft-ietf-ipsec-nat-t-ike-00/01 (draft-ietf-ipsec-udp-encaps-00/01):
/// eight zero octets in front of ESP sent on port 500. Only those drafts use it.
pub const NON_IKE_MARKER: [u8; 8] = [0; 8];

/// The length of an ISAKMP header (RFC 2408 §3.1), the shortest IKE message; the same for
/// IKEv2 (RFC 7296 §3.1).
pub const ISAKMP_HEADER_LEN: usize = 28;

/// The length of the initiator cookie (CKY-I), the first field of an ISAKMP header.
pub const COOKIE_LEN: usize = 8;

/// The length of an ESP header (SPI and sequence number), the shortest ESP packet that can
/// be classified (RFC 4303 §2).
pub const ESP_HEADER_LEN: usize = 8;

/// SPIs 1 to 255 are reserved by IANA (RFC 4303 §2.1) and 0 is never an SPI (it is the
/// non-ESP marker on port 4500).
pub const MAX_RESERVED_SPI: u32 = 255;

/// NAT-T payload types and encapsulation modes, RFC and draft numbering.
pub mod numbers {
    /// NAT-D payload type, RFC 3947 §3.2.
    pub const NAT_D: u8 = 20;
    /// NAT-OA payload type, RFC 3947 §5.1.
    pub const NAT_OA: u8 = 21;
    /// NAT-D payload type in the drafts (private use range).
    pub const NAT_D_DRAFT: u8 = 130;
    /// NAT-OA payload type in the drafts.
    pub const NAT_OA_DRAFT: u8 = 131;

    /// Encapsulation mode UDP-Encapsulated-Tunnel, RFC 3947 §5.2.
    pub const ENCAP_UDP_TUNNEL: u16 = 3;
    /// Encapsulation mode UDP-Encapsulated-Transport, RFC 3947 §5.2.
    pub const ENCAP_UDP_TRANSPORT: u16 = 4;
    /// UDP-Encapsulated-Tunnel in the drafts.
    pub const ENCAP_UDP_TUNNEL_DRAFT: u16 = 61443;
    /// UDP-Encapsulated-Transport in the drafts.
    pub const ENCAP_UDP_TRANSPORT_DRAFT: u16 = 61444;
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn constants_match_reference_file() {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/natt_dpd_gre_reference.json"))
                .unwrap();
        let c = &json["nat_t_constants"];
        assert_eq!(c["udp_port"], u64::from(NAT_T_PORT));
        assert!(
            c["non_esp_marker"]
                .as_str()
                .unwrap()
                .starts_with("00000000")
        );
        assert!(c["nat_keepalive"].as_str().unwrap().contains("0xFF"));
        assert_eq!(c["nat_d_payload_type"], u64::from(numbers::NAT_D));
        assert_eq!(c["nat_oa_payload_type"], u64::from(numbers::NAT_OA));
        assert_eq!(
            c["draft_payload_types"]["NAT_D"],
            u64::from(numbers::NAT_D_DRAFT)
        );
        assert_eq!(
            c["draft_payload_types"]["NAT_OA"],
            u64::from(numbers::NAT_OA_DRAFT)
        );
        let m = &c["encapsulation_modes"];
        assert_eq!(
            m["UDP_Encapsulated_Tunnel"],
            u64::from(numbers::ENCAP_UDP_TUNNEL)
        );
        assert_eq!(
            m["UDP_Encapsulated_Transport"],
            u64::from(numbers::ENCAP_UDP_TRANSPORT)
        );
        assert_eq!(
            m["draft_UDP_Encapsulated_Tunnel"],
            u64::from(numbers::ENCAP_UDP_TUNNEL_DRAFT)
        );
        assert_eq!(
            m["draft_UDP_Encapsulated_Transport"],
            u64::from(numbers::ENCAP_UDP_TRANSPORT_DRAFT)
        );
        assert_eq!(NON_ESP_MARKER, [0, 0, 0, 0]);
        assert_eq!(KEEPALIVE_PAYLOAD, [0xff]);
    }
}
