//! Vendor ID payload (RFC 2408 §3.16). Well-known values are in
//! [`super::consts::vendor_id`].

use super::IkeWireError;
use super::payload::data_payload;

data_payload!(
    /// A zero-copy view of a Vendor ID payload body.
    view VendorIdPayload,
    /// A Vendor ID payload.
    repr VendorIdRepr {},
    min 0, max usize::MAX, err IkeWireError::Malformed
);

#[cfg(test)]
mod tests {
    use super::super::consts::vendor_id;
    use super::*;

    #[test]
    fn dpd() {
        let r = VendorIdRepr::parse(&vendor_id::DPD).unwrap();
        assert_eq!(r.data[14..], [1, 0]);
        assert_eq!(vendor_id::nat_t_variant(r.data), None);
        assert_eq!(
            vendor_id::nat_t_variant(&vendor_id::NATT_RFC3947),
            Some(vendor_id::NatTVariant::Rfc3947)
        );
    }
}
