//! Assigned numbers of ISAKMP (RFC 2408), the IPsec DOI (RFC 2407), NAT-T (RFC 3947) and
//! DPD (RFC 3706). Phase-1 and IPsec SA attributes live in [`super::ike_attr`] and
//! [`super::ipsec_attr`].

/// Next Payload / payload type values (RFC 2408 §3.1, RFC 3947 §3.2 and §5.2).
pub mod payload_type {
    /// No next payload: ends a chain.
    pub const NONE: u8 = 0;
    /// Security Association.
    pub const SA: u8 = 1;
    /// Proposal (only nested inside an SA payload).
    pub const PROPOSAL: u8 = 2;
    /// Transform (only nested inside a Proposal payload).
    pub const TRANSFORM: u8 = 3;
    /// Key Exchange.
    pub const KE: u8 = 4;
    /// Identification.
    pub const ID: u8 = 5;
    /// Certificate.
    pub const CERT: u8 = 6;
    /// Certificate Request.
    pub const CERT_REQ: u8 = 7;
    /// Hash.
    pub const HASH: u8 = 8;
    /// Signature.
    pub const SIG: u8 = 9;
    /// Nonce.
    pub const NONCE: u8 = 10;
    /// Notification.
    pub const NOTIFY: u8 = 11;
    /// Delete.
    pub const DELETE: u8 = 12;
    /// Vendor ID.
    pub const VENDOR_ID: u8 = 13;
    /// NAT Discovery (RFC 3947).
    pub const NAT_D: u8 = 20;
    /// NAT Original Address (RFC 3947).
    pub const NAT_OA: u8 = 21;
    /// NAT Discovery as the NAT-T drafts numbered it (private use range).
    pub const NAT_D_DRAFT: u8 = 130;
    /// NAT Original Address as the NAT-T drafts numbered it.
    pub const NAT_OA_DRAFT: u8 = 131;

    /// Whether this library knows the payload type (anything else is "unknown").
    #[must_use]
    pub const fn is_known(t: u8) -> bool {
        matches!(
            t,
            SA..=VENDOR_ID | NAT_D | NAT_OA | NAT_D_DRAFT | NAT_OA_DRAFT
        )
    }
}

/// Exchange types (RFC 2408 §3.1, RFC 2409 §9).
pub mod exchange_type {
    /// Base exchange.
    pub const BASE: u8 = 1;
    /// Identity Protection: IKEv1 Main Mode.
    pub const IDENTITY_PROTECTION: u8 = 2;
    /// Alias of [`IDENTITY_PROTECTION`].
    pub const MAIN_MODE: u8 = IDENTITY_PROTECTION;
    /// Authentication Only.
    pub const AUTHENTICATION_ONLY: u8 = 3;
    /// Aggressive Mode.
    pub const AGGRESSIVE: u8 = 4;
    /// Informational.
    pub const INFORMATIONAL: u8 = 5;
    /// Quick Mode (RFC 2409).
    pub const QUICK_MODE: u8 = 32;
    /// New Group Mode (RFC 2409).
    pub const NEW_GROUP_MODE: u8 = 33;
}

/// ISAKMP header flags (RFC 2408 §3.1).
pub mod flags {
    /// Encryption: the payloads after the header are encrypted.
    pub const ENCRYPTION: u8 = 0x01;
    /// Commit.
    pub const COMMIT: u8 = 0x02;
    /// Authentication only.
    pub const AUTHENTICATION_ONLY: u8 = 0x04;
}

/// Domains of Interpretation.
pub mod doi {
    /// The generic ISAKMP DOI (used by some Informational exchanges).
    pub const ISAKMP: u32 = 0;
    /// The Internet IP Security DOI (RFC 2407).
    pub const IPSEC: u32 = 1;
}

/// IPsec DOI situations (RFC 2407 §4.2).
pub mod situation {
    /// SIT_IDENTITY_ONLY, the only one this library speaks.
    pub const IDENTITY_ONLY: u32 = 0x01;
    /// SIT_SECRECY (labelled domains; not supported).
    pub const SECRECY: u32 = 0x02;
    /// SIT_INTEGRITY (labelled domains; not supported).
    pub const INTEGRITY: u32 = 0x04;
}

/// Protocol identifiers of the IPsec DOI (RFC 2407 §4.4.1).
pub mod protocol_id {
    /// PROTO_ISAKMP: the phase-1 SA itself (and DPD / ISAKMP deletes).
    pub const ISAKMP: u8 = 1;
    /// PROTO_IPSEC_AH.
    pub const AH: u8 = 2;
    /// PROTO_IPSEC_ESP.
    pub const ESP: u8 = 3;
    /// PROTO_IPCOMP.
    pub const IPCOMP: u8 = 4;
}

/// Identification types of the IPsec DOI (RFC 2407 §4.6.2.1).
pub mod id_type {
    /// A single IPv4 address (4 bytes).
    pub const IPV4_ADDR: u8 = 1;
    /// A fully qualified domain name.
    pub const FQDN: u8 = 2;
    /// A user@FQDN string.
    pub const USER_FQDN: u8 = 3;
    /// IPv4 address and mask (8 bytes).
    pub const IPV4_ADDR_SUBNET: u8 = 4;
    /// A single IPv6 address (16 bytes).
    pub const IPV6_ADDR: u8 = 5;
    /// IPv6 address and mask (32 bytes).
    pub const IPV6_ADDR_SUBNET: u8 = 6;
    /// IPv4 start and end address (8 bytes).
    pub const IPV4_ADDR_RANGE: u8 = 7;
    /// IPv6 start and end address (32 bytes).
    pub const IPV6_ADDR_RANGE: u8 = 8;
    /// A DER-encoded X.500 distinguished name.
    pub const DER_ASN1_DN: u8 = 9;
    /// A DER-encoded X.500 general name.
    pub const DER_ASN1_GN: u8 = 10;
    /// An opaque key identifier.
    pub const KEY_ID: u8 = 11;
}

/// Notify Message Types (RFC 2408 §3.14.1, RFC 2407 §4.6.3, RFC 3706).
pub mod notify {
    /// INVALID-PAYLOAD-TYPE.
    pub const INVALID_PAYLOAD_TYPE: u16 = 1;
    /// DOI-NOT-SUPPORTED.
    pub const DOI_NOT_SUPPORTED: u16 = 2;
    /// SITUATION-NOT-SUPPORTED.
    pub const SITUATION_NOT_SUPPORTED: u16 = 3;
    /// INVALID-COOKIE.
    pub const INVALID_COOKIE: u16 = 4;
    /// INVALID-MAJOR-VERSION.
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    /// INVALID-MINOR-VERSION.
    pub const INVALID_MINOR_VERSION: u16 = 6;
    /// INVALID-EXCHANGE-TYPE.
    pub const INVALID_EXCHANGE_TYPE: u16 = 7;
    /// INVALID-FLAGS.
    pub const INVALID_FLAGS: u16 = 8;
    /// INVALID-MESSAGE-ID.
    pub const INVALID_MESSAGE_ID: u16 = 9;
    /// INVALID-PROTOCOL-ID.
    pub const INVALID_PROTOCOL_ID: u16 = 10;
    /// INVALID-SPI.
    pub const INVALID_SPI: u16 = 11;
    /// INVALID-TRANSFORM-ID.
    pub const INVALID_TRANSFORM_ID: u16 = 12;
    /// ATTRIBUTES-NOT-SUPPORTED.
    pub const ATTRIBUTES_NOT_SUPPORTED: u16 = 13;
    /// NO-PROPOSAL-CHOSEN.
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    /// BAD-PROPOSAL-SYNTAX.
    pub const BAD_PROPOSAL_SYNTAX: u16 = 15;
    /// PAYLOAD-MALFORMED.
    pub const PAYLOAD_MALFORMED: u16 = 16;
    /// INVALID-KEY-INFORMATION.
    pub const INVALID_KEY_INFORMATION: u16 = 17;
    /// INVALID-ID-INFORMATION.
    pub const INVALID_ID_INFORMATION: u16 = 18;
    /// INVALID-CERT-ENCODING.
    pub const INVALID_CERT_ENCODING: u16 = 19;
    /// INVALID-CERTIFICATE.
    pub const INVALID_CERTIFICATE: u16 = 20;
    /// CERT-TYPE-UNSUPPORTED.
    pub const CERT_TYPE_UNSUPPORTED: u16 = 21;
    /// INVALID-CERT-AUTHORITY.
    pub const INVALID_CERT_AUTHORITY: u16 = 22;
    /// INVALID-HASH-INFORMATION.
    pub const INVALID_HASH_INFORMATION: u16 = 23;
    /// AUTHENTICATION-FAILED.
    pub const AUTHENTICATION_FAILED: u16 = 24;
    /// INVALID-SIGNATURE.
    pub const INVALID_SIGNATURE: u16 = 25;
    /// ADDRESS-NOTIFICATION.
    pub const ADDRESS_NOTIFICATION: u16 = 26;
    /// NOTIFY-SA-LIFETIME.
    pub const NOTIFY_SA_LIFETIME: u16 = 27;
    /// CERTIFICATE-UNAVAILABLE.
    pub const CERTIFICATE_UNAVAILABLE: u16 = 28;
    /// UNSUPPORTED-EXCHANGE-TYPE.
    pub const UNSUPPORTED_EXCHANGE_TYPE: u16 = 29;
    /// UNEQUAL-PAYLOAD-LENGTHS.
    pub const UNEQUAL_PAYLOAD_LENGTHS: u16 = 30;
    /// CONNECTED (status).
    pub const CONNECTED: u16 = 16384;
    /// RESPONDER-LIFETIME (RFC 2407 §4.6.3.1).
    pub const RESPONDER_LIFETIME: u16 = 24576;
    /// REPLAY-STATUS (RFC 2407 §4.6.3.2).
    pub const REPLAY_STATUS: u16 = 24577;
    /// INITIAL-CONTACT (RFC 2407 §4.6.3.3).
    pub const INITIAL_CONTACT: u16 = 24578;
    /// R-U-THERE (RFC 3706 §5).
    pub const R_U_THERE: u16 = 36136;
    /// R-U-THERE-ACK (RFC 3706 §5).
    pub const R_U_THERE_ACK: u16 = 36137;

    /// Whether the type is an error (1..=16383) rather than a status message.
    #[must_use]
    pub const fn is_error(t: u16) -> bool {
        t >= 1 && t < CONNECTED
    }
}

/// Well-known Vendor ID payload contents.
pub mod vendor_id {
    /// RFC 3947 NAT-T: MD5("RFC 3947").
    pub const NATT_RFC3947: [u8; 16] =
        *b"\x4a\x13\x1c\x81\x07\x03\x58\x45\x5c\x57\x28\xf2\x0e\x95\x45\x2f";
    /// draft-ietf-ipsec-nat-t-ike-02 (without the newline).
    pub const NATT_DRAFT_02: [u8; 16] =
        *b"\xcd\x60\x46\x43\x35\xdf\x21\xf8\x7c\xfd\xb2\xfc\x68\xb6\xa4\x48";
    /// draft-ietf-ipsec-nat-t-ike-02 with a trailing newline (the widely deployed one).
    pub const NATT_DRAFT_02_N: [u8; 16] =
        *b"\x90\xcb\x80\x91\x3e\xbb\x69\x6e\x08\x63\x81\xb5\xec\x42\x7b\x1f";
    /// draft-ietf-ipsec-nat-t-ike-03.
    pub const NATT_DRAFT_03: [u8; 16] =
        *b"\x7d\x94\x19\xa6\x53\x10\xca\x6f\x2c\x17\x9d\x92\x15\x52\x9d\x56";
    /// RFC 3706 Dead Peer Detection, version 1.0.
    pub const DPD: [u8; 16] = *b"\xaf\xca\xd7\x13\x68\xa1\xf1\xc9\x6b\x86\x96\xfc\x77\x57\x01\x00";
    /// XAUTH (draft-beaulieu-ike-xauth), 8 bytes.
    pub const XAUTH: [u8; 8] = *b"\x09\x00\x26\x89\xdf\xd6\xb7\x12";

    /// Whether `vid` announces NAT traversal as RFC 3947 or one of the drafts that use
    /// payload types 130/131.
    #[must_use]
    pub fn nat_t_variant(vid: &[u8]) -> Option<NatTVariant> {
        if vid == NATT_RFC3947 {
            Some(NatTVariant::Rfc3947)
        } else if vid == NATT_DRAFT_02 || vid == NATT_DRAFT_02_N || vid == NATT_DRAFT_03 {
            Some(NatTVariant::Draft)
        } else {
            None
        }
    }

    /// Which NAT-T numbering a peer speaks.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    pub enum NatTVariant {
        /// RFC 3947: payload types 20/21, encapsulation modes 3/4.
        Rfc3947,
        /// draft-ietf-ipsec-nat-t-ike-02/03: payload types 130/131, modes 61443/61444.
        Draft,
    }
}
