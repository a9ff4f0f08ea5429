//! The job interface: a burst of 32 mixed ESP jobs (seal and open; AES-CBC, 3DES, NULL
//! with HMACs, AES-GCM; with and without ESN) submitted, then polled, gives the same
//! bytes as the direct trait calls. Runs over the software provider always and over
//! AF_ALG where the kernel has it, and compares the two.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;

use common::{Rng, af_alg_or_skip};
use hal_traits::engine::{
    CryptoEngine, EngineError, InlineBytes, JobDesc, JobId, JobOp, Region, Session, SessionCipher,
    SyncEngine,
};
use hal_traits::{Aead, AeadAlg, CbcCipher, CipherAlg, CryptoError, CryptoProvider, Mac, MacAlg};
use ipsec_af_alg::{AfAlgCrypto, AfAlgEngine, Probe, kernel_offers};
use ipsec_soft_crypto::SoftCrypto;

#[derive(Clone, Copy, Debug)]
enum Enc {
    Null,
    Cbc(CipherAlg),
    Gcm(AeadAlg),
}

/// One SA direction: algorithms and keys.
#[derive(Clone, Debug)]
struct Spec {
    enc: Enc,
    mac: Option<MacAlg>,
    enc_key: Vec<u8>,
    mac_key: Vec<u8>,
}

fn session<P: CryptoProvider>(s: &Spec) -> Session<P> {
    let cipher = match s.enc {
        Enc::Null => SessionCipher::Null,
        Enc::Cbc(a) => SessionCipher::Cbc(P::Cbc::new(a, &s.enc_key).unwrap()),
        Enc::Gcm(a) => SessionCipher::Aead(P::Aead::new(a, &s.enc_key).unwrap()),
    };
    let mac = s.mac.map(|m| P::Mac::new(m, &s.mac_key).unwrap());
    Session::new(cipher, mac).unwrap()
}

/// A job's shape: where things are in its buffer.
#[derive(Clone, Debug)]
struct Shape {
    spec: usize,
    op: JobOp,
    cipher: Region,
    auth: Region,
    icv_offset: usize,
    icv_len: usize,
    iv: Vec<u8>,
    aad: Vec<u8>,
    trailer: Vec<u8>,
}

fn specs(rng: &mut Rng, with_des: bool) -> Vec<Spec> {
    let mut v = vec![
        (Enc::Cbc(CipherAlg::Aes128Cbc), Some(MacAlg::HmacSha1_96)),
        (Enc::Cbc(CipherAlg::Aes256Cbc), Some(MacAlg::HmacSha256_128)),
        (Enc::Null, Some(MacAlg::HmacSha1_96)),
        (Enc::Gcm(AeadAlg::Aes128Gcm16), None),
        (Enc::Gcm(AeadAlg::Aes256Gcm8), None),
        (Enc::Gcm(AeadAlg::Aes192Gcm12), None),
    ];
    if with_des {
        v.push((Enc::Cbc(CipherAlg::TripleDesCbc), Some(MacAlg::HmacMd5_96)));
    }
    v.into_iter()
        .map(|(enc, mac)| {
            let enc_len = match enc {
                Enc::Null => 0,
                Enc::Cbc(a) => a.key_len(),
                Enc::Gcm(a) => a.key_len(),
            };
            Spec {
                enc,
                mac,
                enc_key: rng.bytes(enc_len),
                mac_key: rng.bytes(mac.map_or(0, MacAlg::key_len)),
            }
        })
        .collect()
}

/// A packet (header | IV | payload | ICV room) and its job shape.
fn make(rng: &mut Rng, spec_ix: usize, s: &Spec, op: JobOp, esn: bool) -> (Vec<u8>, Shape) {
    let (iv_len, block) = match s.enc {
        Enc::Null => (0, 4),
        Enc::Cbc(a) => (a.block_len(), a.block_len()),
        Enc::Gcm(_) => (8, 4),
    };
    let icv_len = match (s.enc, s.mac) {
        (Enc::Gcm(a), _) => a.icv_len(),
        (_, Some(m)) => m.icv_len(),
        _ => 0,
    };
    let ct_len = block * (1 + rng.below(360));
    let start = 8 + iv_len;
    let mut buf = rng.bytes(start + ct_len + icv_len);
    let iv = buf[8..start].to_vec();
    let trailer = if esn { rng.bytes(4) } else { vec![] };
    let (iv, aad) = match s.enc {
        Enc::Gcm(_) => {
            // Nonce = salt | explicit IV; AAD = SPI | [seq hi] | seq lo.
            let nonce = [rng.bytes(4), iv].concat();
            let aad = if esn {
                [&buf[..4], &trailer[..], &buf[4..8]].concat()
            } else {
                buf[..8].to_vec()
            };
            (nonce, aad)
        }
        _ => (iv, vec![]),
    };
    let trailer = if matches!(s.enc, Enc::Gcm(_)) {
        vec![]
    } else {
        trailer
    };
    buf[start + ct_len..].fill(0);
    let shape = Shape {
        spec: spec_ix,
        op,
        // NULL encryption: the payload is only authenticated.
        cipher: Region::new(
            start,
            if matches!(s.enc, Enc::Null) {
                0
            } else {
                ct_len
            },
        ),
        auth: Region::new(0, start + ct_len),
        icv_offset: start + ct_len,
        icv_len,
        iv,
        aad,
        trailer,
    };
    (buf, shape)
}

/// What the direct trait calls make of `buf`.
fn direct<P: CryptoProvider>(s: &Spec, sh: &Shape, buf: &mut [u8]) -> Result<(), CryptoError> {
    let ct = sh.cipher.offset..sh.cipher.offset + sh.cipher.len;
    let auth = sh.auth.offset..sh.auth.offset + sh.auth.len;
    let icv = sh.icv_offset..sh.icv_offset + sh.icv_len;
    let mac = s.mac.map(|m| P::Mac::new(m, &s.mac_key).unwrap());
    match (s.enc, sh.op) {
        (Enc::Gcm(a), op) => {
            let g = P::Aead::new(a, &s.enc_key).unwrap();
            let nonce: [u8; 12] = sh.iv.clone().try_into().unwrap();
            let (head, tag) = buf.split_at_mut(sh.icv_offset);
            let data = &mut head[ct];
            match op {
                JobOp::Seal => g.seal(&nonce, &sh.aad, data, &mut tag[..sh.icv_len]),
                JobOp::Open => g.open(&nonce, &sh.aad, data, &tag[..sh.icv_len]),
            }
        }
        (enc, JobOp::Seal) => {
            if let Enc::Cbc(a) = enc {
                P::Cbc::new(a, &s.enc_key)
                    .unwrap()
                    .encrypt(&sh.iv, &mut buf[ct])?;
            }
            if let Some(m) = &mac {
                let mut out = vec![0u8; sh.icv_len];
                m.compute(&[&buf[auth], &sh.trailer], &mut out)?;
                buf[icv].copy_from_slice(&out);
            }
            Ok(())
        }
        (enc, JobOp::Open) => {
            if let Some(m) = &mac {
                m.verify(&[&buf[auth], &sh.trailer], &buf[icv])?;
            }
            if let Enc::Cbc(a) = enc {
                P::Cbc::new(a, &s.enc_key)
                    .unwrap()
                    .decrypt(&sh.iv, &mut buf[ct])?;
            }
            Ok(())
        }
    }
}

/// Builds 33 packets: 32 for the burst (half of them sealed first, to be opened; one of
/// those tampered) and one to find the queue full.
fn workload(rng: &mut Rng, specs: &[Spec]) -> Vec<(Vec<u8>, Shape)> {
    (0..33)
        .map(|i| {
            let spec = i % specs.len();
            let op = if i % 2 == 0 { JobOp::Seal } else { JobOp::Open };
            let esn = i % 3 == 0;
            let (mut buf, mut shape) = make(rng, spec, &specs[spec], JobOp::Seal, esn);
            if op == JobOp::Open {
                direct::<SoftCrypto>(&specs[spec], &shape, &mut buf).unwrap();
                shape.op = JobOp::Open;
                if i == 7 {
                    buf[shape.icv_offset - 1] ^= 1;
                }
            }
            (buf, shape)
        })
        .collect()
}

/// Submits the first 32 packets as one burst, checks the 33rd is refused (and handed
/// back), polls everything, and returns each packet's result and bytes.
fn run_burst<'a, P: CryptoProvider + 'a>(
    sessions: &'a [Session<P>],
    pool: &'a mut [Vec<u8>],
    shapes: &[Shape],
) -> Vec<(Result<(), CryptoError>, Vec<u8>)> {
    let mut engine = SyncEngine::<'a, P, 32>::new();
    let mut ids: HashMap<JobId, usize> = HashMap::new();
    for (i, buf) in pool.iter_mut().enumerate() {
        let sh = &shapes[i];
        let job = JobDesc {
            session: &sessions[sh.spec],
            op: sh.op,
            buf: buf.as_mut_slice(),
            cipher: sh.cipher,
            auth: sh.auth,
            icv_offset: sh.icv_offset,
            iv: InlineBytes::from_slice(&sh.iv).unwrap(),
            aad: InlineBytes::from_slice(&sh.aad).unwrap(),
            mac_trailer: InlineBytes::from_slice(&sh.trailer).unwrap(),
        };
        match engine.submit(job) {
            Ok(id) => {
                ids.insert(id, i);
            }
            Err(r) => {
                assert_eq!((i, r.error), (32, EngineError::Full));
                assert_eq!(r.job.buf.len(), shapes[32].icv_offset + shapes[32].icv_len);
            }
        }
    }
    assert_eq!(engine.in_flight(), 32);
    engine.flush();
    let mut out = vec![(Err(CryptoError::Unsupported), vec![]); 32];
    while let Some(c) = engine.poll_complete() {
        let i = ids.remove(&c.id).expect("a job id we submitted, once");
        out[i] = (c.result, c.buf.to_vec());
    }
    assert!(ids.is_empty(), "every job completed");
    assert_eq!(engine.in_flight(), 0);
    out
}

fn check_provider<P: CryptoProvider>(name: &str, with_des: bool) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(0xb0057);
    let specs = specs(&mut rng, with_des);
    let work = workload(&mut rng, &specs);
    let shapes: Vec<Shape> = work.iter().map(|(_, s)| s.clone()).collect();
    let expected: Vec<(Result<(), CryptoError>, Vec<u8>)> = work[..32]
        .iter()
        .map(|(b, sh)| {
            let mut b = b.clone();
            let r = direct::<P>(&specs[sh.spec], sh, &mut b);
            (r, b)
        })
        .collect();
    let sessions: Vec<Session<P>> = specs.iter().map(session::<P>).collect();
    let mut pool: Vec<Vec<u8>> = work.into_iter().map(|(b, _)| b).collect();
    let inputs = pool.clone();
    let got = run_burst(&sessions, &mut pool, &shapes);
    let mut fails = 0;
    for (i, ((gr, gb), (er, eb))) in got.iter().zip(&expected).enumerate() {
        assert_eq!(gr, er, "{name} job {i} {:?}", shapes[i]);
        if gr.is_ok() {
            assert_eq!(gb, eb, "{name} job {i} bytes {:?}", shapes[i]);
        } else {
            fails += 1;
            // CBC + HMAC: the ICV check failed first, so nothing was decrypted.
            assert!(!matches!(specs[shapes[i].spec].enc, Enc::Gcm(_)));
            assert_eq!(gb, &inputs[i], "{name} job {i} left as received");
        }
    }
    assert_eq!(fails, 1, "{name}: exactly the tampered packet fails");
    println!(
        "RAN 32-job burst over {name}: {} specs, seal+open, 1 forged",
        specs.len()
    );
    got.into_iter().map(|(_, b)| b).collect()
}

#[test]
fn burst_of_32_over_software_matches_direct_calls() {
    check_provider::<SoftCrypto>("soft-crypto", true);
}

#[test]
fn burst_of_32_over_af_alg_matches_direct_calls_and_software() {
    if !af_alg_or_skip("burst_of_32_over_af_alg") {
        return;
    }
    let need = [
        Probe::Cipher(CipherAlg::Aes128Cbc),
        Probe::Mac(MacAlg::HmacSha1_96),
        Probe::Mac(MacAlg::HmacSha256_128),
        Probe::Aead(AeadAlg::Aes128Gcm16),
    ];
    if let Some(p) = need.iter().find(|p| !kernel_offers(**p)) {
        println!("SKIP burst over AF_ALG: kernel lacks {p:?}");
        return;
    }
    let des = kernel_offers(Probe::Cipher(CipherAlg::TripleDesCbc))
        && kernel_offers(Probe::Mac(MacAlg::HmacMd5_96));
    let hw = check_provider::<AfAlgCrypto>("AF_ALG", des);
    let sw = check_provider::<SoftCrypto>("soft-crypto", des);
    assert_eq!(hw, sw, "AF_ALG and software agree on every job");
    // The port's alias is the same adapter.
    let _: AfAlgEngine<'_, 4> = AfAlgEngine::new();
}
