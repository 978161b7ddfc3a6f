//! Bad streams: every failure is a typed error, and the model keeps serving
//! its last good stage.

mod common;

use common::*;
use p2u::format::stream::{read_all, StreamHeader, CHUNK_PREFIX, HEADER_PREFIX};
use p2u::{Error, ProgressiveModel};

fn fixture() -> (p2u_encode::Encoded, usize) {
    let enc = encode(&fixture_model(), "fixture", &fixture_options());
    let header_len = StreamHeader::total_len(enc.stream[..HEADER_PREFIX].try_into().unwrap()).unwrap();
    (enc, header_len)
}

/// Byte offsets where each chunk ends.
fn chunk_ends(stream: &[u8], header_len: usize) -> Vec<usize> {
    let mut ends = vec![];
    let mut pos = header_len;
    while pos < stream.len() {
        let len = u32::from_le_bytes(stream[pos + 12..pos + 16].try_into().unwrap()) as usize;
        pos += CHUNK_PREFIX + len + 4;
        ends.push(pos);
    }
    ends
}

/// The model still runs, and gives exactly the outputs of a model fed only
/// the first `good` chunks.
fn assert_serves_prefix(m: &mut ProgressiveModel, enc: &p2u_encode::Encoded, good_end: usize, good_chunks: u64) {
    let x = input(&FIXTURE_INPUT, 3, -1.0, 1.0);
    let got = m.run(vec![x.clone()]).expect("model keeps serving after a bad chunk");
    assert_eq!(got.status.chunks_applied, good_chunks);
    let mut clean = load_base(enc, &FIXTURE_INPUT);
    clean.feed(&enc.stream[..good_end]).unwrap();
    let want = clean.run(vec![x]).unwrap();
    assert_eq!(got.status, want.status);
    assert_eq!(output_bits(&got.outputs), output_bits(&want.outputs));
}

#[test]
fn truncated_stream_at_many_offsets() {
    let (enc, header_len) = fixture();
    let ends = chunk_ends(&enc.stream, header_len);
    let offsets: Vec<usize> = (0..enc.stream.len()).step_by(53).chain([HEADER_PREFIX - 1, header_len - 1, header_len + 3]).collect();
    for cut in offsets {
        let mut m = load_base(&enc, &FIXTURE_INPUT);
        m.feed(&enc.stream[..cut]).unwrap();
        let err = m.finish_stream().unwrap_err();
        assert!(matches!(err, Error::Truncated(_)), "cut {cut}: {err}");
        let complete = ends.iter().filter(|&&e| e <= cut).count();
        let good_end = if complete == 0 { cut.min(header_len) } else { ends[complete - 1] };
        assert_serves_prefix(&mut m, &enc, good_end, complete as u64);
        assert!(!m.status().exact);
    }
}

#[test]
fn flipped_bytes_are_rejected_with_typed_errors() {
    let (enc, header_len) = fixture();
    let ends = chunk_ends(&enc.stream, header_len);
    let mut rng = Rng(11);
    let mut positions: Vec<usize> = (0..60).map(|_| rng.below(enc.stream.len())).collect();
    positions.extend([0, 5, HEADER_PREFIX + 3, header_len - 1, header_len, header_len + 9, ends[3] + 13, enc.stream.len() - 1]);
    for pos in positions {
        let mut bad = enc.stream.clone();
        bad[pos] ^= 0x5A;
        let mut m = load_base(&enc, &FIXTURE_INPUT);
        let err = m.feed(&bad).unwrap_err();
        if pos < header_len {
            assert!(matches!(err, Error::Header(_)), "byte {pos}: {err}");
            assert_serves_prefix(&mut m, &enc, 0, 0);
        } else {
            assert!(matches!(err, Error::Chunk { .. }), "byte {pos}: {err}");
            let good = ends.iter().filter(|&&e| e <= pos).count();
            let good_end = if good == 0 { header_len } else { ends[good - 1] };
            assert_serves_prefix(&mut m, &enc, good_end, good as u64);
        }
        assert!(m.feed(&[]).is_err(), "a failed stream stays failed");
    }
}

#[test]
fn stream_of_another_model_is_a_mismatch() {
    let (enc, _) = fixture();
    let mut other_model = fixture_model();
    let g = other_model.graph.as_mut().unwrap();
    let w = g.initializer.iter_mut().find(|t| t.name == "G").unwrap();
    w.raw_data[0] ^= 1;
    let other = encode(&other_model, "other", &fixture_options());
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let err = m.feed(&other.stream).unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err}");
    assert_serves_prefix(&mut m, &enc, 0, 0);
    // a chunk of the other model's stream applied directly is rejected too
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let (h, _) = read_all(&other.stream).unwrap();
    assert!(matches!(m.attach(h), Err(Error::Mismatch(_))));
}

#[test]
fn absurd_header_sizes_are_rejected_before_allocating() {
    let (enc, header_len) = fixture();
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let mut huge = enc.stream[..HEADER_PREFIX].to_vec();
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = m.feed(&huge).unwrap_err();
    assert!(matches!(err, Error::Header(_)), "{err}");

    // a header with a valid checksum that claims 2^31 tensors
    let body_len = header_len - HEADER_PREFIX - 4;
    let mut body = enc.stream[HEADER_PREFIX..HEADER_PREFIX + body_len].to_vec();
    let n_stages = body[64] as usize;
    let count_at = 65 + 2 * n_stages;
    body[count_at..count_at + 4].copy_from_slice(&(1u32 << 31).to_le_bytes());
    let mut forged = enc.stream[..HEADER_PREFIX].to_vec();
    forged.extend_from_slice(&body);
    forged.extend_from_slice(&crc32fast::hash(&forged).to_le_bytes());
    let err = StreamHeader::parse(&forged).unwrap_err();
    assert!(matches!(&err, Error::Header(m) if m.contains("tensors")), "{err}");

    // a chunk that claims a 4 GiB payload fails at once, without waiting for it
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let mut s = enc.stream[..header_len + CHUNK_PREFIX].to_vec();
    s[header_len + 12..header_len + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = m.feed(&s).unwrap_err();
    assert!(matches!(err, Error::Chunk { .. }), "{err}");
    assert_serves_prefix(&mut m, &enc, header_len, 0);
}

#[test]
fn chunks_out_of_order_are_rejected() {
    let (enc, header_len) = fixture();
    let ends = chunk_ends(&enc.stream, header_len);
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let (header, chunks) = read_all(&enc.stream).unwrap();
    m.attach(header).unwrap();
    let last = chunks.last().unwrap();
    assert!(matches!(m.apply(last), Err(Error::Order(_))));
    m.apply(&chunks[0]).unwrap();
    assert!(matches!(m.apply(&chunks[0]), Err(Error::Order(_))), "a chunk cannot be applied twice");
    assert_serves_prefix(&mut m, &enc, ends[0], 1);
}

#[test]
fn corrupt_base_is_a_clear_error() {
    let (enc, _) = fixture();
    let opts = p2u::RuntimeOptions::default();
    assert!(matches!(ProgressiveModel::from_base(&enc.base[..enc.base.len() / 2], opts.clone()), Err(Error::Onnx(_))));
    assert!(ProgressiveModel::from_base(b"not an onnx file at all", opts).is_err());
}

/// Re-frames a header with its fields changed by `edit` (prefix and body,
/// before the CRC), with a valid CRC.
fn reheader(stream: &[u8], header_len: usize, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut h = stream[..header_len - 4].to_vec();
    edit(&mut h);
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(&stream[header_len..]);
    h
}

#[test]
fn spliced_streams_are_rejected_at_the_first_foreign_chunk() {
    // two encodes of the same model whose headers agree on everything the
    // runtime checks (same base): the second's chunks after the first's header
    let enc = encode(&fixture_model(), "fixture", &fixture_uniform(4));
    let header_len = StreamHeader::total_len(enc.stream[..HEADER_PREFIX].try_into().unwrap()).unwrap();
    let ends = chunk_ends(&enc.stream, header_len);
    let other = encode(&fixture_model(), "fixture", &fixture_uniform(3));
    let other_header = StreamHeader::total_len(other.stream[..HEADER_PREFIX].try_into().unwrap()).unwrap();
    assert_ne!(enc.stream[header_len..], other.stream[other_header..], "the two encodes must differ");
    // first chunk of our stream, then the other's chunks
    let first_other = other_header + (chunk_ends(&other.stream, other_header)[0] - other_header);
    let mut spliced = enc.stream[..ends[0]].to_vec();
    spliced.extend_from_slice(&other.stream[first_other..]);
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let err = m.feed(&spliced).unwrap_err();
    assert!(matches!(&err, Error::Chunk { index: 1, source, .. } if matches!(**source, Error::Mismatch(_))), "{err}");
    assert_eq!(err.kind(), "mismatch");
    assert_serves_prefix(&mut m, &enc, ends[0], 1);

    // the other's header with our chunks (after its base: a base mismatch
    // caught first); with the base hash forged to ours, the first chunk fails
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let mut forged = reheader(&other.stream[..other_header], other_header, |h| {
        h[HEADER_PREFIX + 32..HEADER_PREFIX + 64].copy_from_slice(&p2u::format::sha256(&enc.base));
    });
    forged.extend_from_slice(&enc.stream[header_len..]);
    let err = m.feed(&forged).unwrap_err();
    assert!(matches!(&err, Error::Chunk { index: 0, .. }), "{err}");
    assert_eq!(err.kind(), "mismatch");
    assert_eq!(m.status().chunks_applied, 0);
}

#[test]
fn reordered_chunks_are_rejected_where_they_stand() {
    let (enc, header_len) = fixture();
    let ends = chunk_ends(&enc.stream, header_len);
    // swap chunks 1 and 2 (both stay valid frames with valid CRCs)
    let (a, b, c) = (ends[0], ends[1], ends[2]);
    let mut s = enc.stream[..a].to_vec();
    s.extend_from_slice(&enc.stream[b..c]);
    s.extend_from_slice(&enc.stream[a..b]);
    s.extend_from_slice(&enc.stream[c..]);
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let err = m.feed(&s).unwrap_err();
    assert!(matches!(&err, Error::Chunk { index: 1, .. }), "{err}");
    assert_eq!(err.kind(), "mismatch");
    assert_serves_prefix(&mut m, &enc, a, 1);
}

#[test]
fn header_flags_and_chunk_reserved_bits_are_checked() {
    let (enc, header_len) = fixture();
    // an f32 model's header sets no flag; an unknown one is refused, not skipped
    assert_eq!(&enc.stream[6..8], &[0, 0]);
    let flagged = reheader(&enc.stream, header_len, |h| h[7] = 0x80);
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let err = m.feed(&flagged).unwrap_err();
    assert!(matches!(&err, Error::Header(msg) if msg.contains("flags 0x8000")), "{err}");

    // a reserved bit set in the first chunk, its CRC recomputed
    let mut s = enc.stream.clone();
    let end = chunk_ends(&enc.stream, header_len)[0];
    s[header_len + 10] = 1;
    let crc = crc32fast::hash(&s[header_len + 4..end - 4]);
    s[end - 4..end].copy_from_slice(&crc.to_le_bytes());
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let err = m.feed(&s).unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    assert_eq!(err.kind(), "corrupt");
    assert_serves_prefix(&mut m, &enc, header_len, 0);
}

#[test]
fn expected_hashes_vouch_for_base_and_header() {
    let (enc, header_len) = fixture();
    let opts = |base: Option<[u8; 32]>, header: Option<[u8; 32]>| p2u::RuntimeOptions {
        input_shapes: vec![FIXTURE_INPUT.to_vec()],
        base_sha256: base,
        stream_header_sha256: header,
        ..Default::default()
    };
    let manifest_header = p2u::format::parse_hex(&enc.manifest.stream_header_sha256).expect("manifest names the header hash");
    assert_eq!(manifest_header, p2u::format::sha256(&enc.stream[..header_len]));
    let base_hash = p2u::format::sha256(&enc.base);
    let mut m = ProgressiveModel::from_base(&enc.base, opts(Some(base_hash), Some(manifest_header))).unwrap();
    m.feed(&enc.stream).unwrap();
    assert!(m.status().exact);

    let mut wrong = base_hash;
    wrong[0] ^= 1;
    let err = ProgressiveModel::from_base(&enc.base, opts(Some(wrong), None)).err().unwrap();
    assert_eq!(err.kind(), "corrupt", "{err}");

    let mut m = ProgressiveModel::from_base(&enc.base, opts(None, Some(wrong))).unwrap();
    let err = m.feed(&enc.stream).unwrap_err();
    assert_eq!(err.kind(), "corrupt", "{err}");
    assert!(m.header().is_none(), "a header with the wrong hash is not attached");
}

#[test]
fn the_js_error_kinds_list_every_rust_kind() {
    let dts = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pkg/p2u.d.ts")).unwrap();
    let union = dts.split("export type P2uErrorKind =").nth(1).and_then(|s| s.split(';').next()).expect("P2uErrorKind in p2u.d.ts");
    for kind in Error::KINDS {
        assert!(union.contains(&format!("'{kind}'")), "p2u.d.ts P2uErrorKind lacks '{kind}'");
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pkg/README.md")).unwrap();
    for kind in Error::KINDS {
        assert!(readme.contains(&format!("`'{kind}'`")), "pkg/README.md does not document kind '{kind}'");
    }
}

#[test]
fn a_rewound_stream_continues_from_its_last_good_chunk() {
    let (enc, header_len) = fixture();
    let ends = chunk_ends(&enc.stream, header_len);
    // corrupt chunk 2 (a refinement) and, separately, the last chunk (exact stage)
    for bad_chunk in [2, ends.len() - 1] {
        let mut bad = enc.stream.clone();
        bad[ends[bad_chunk] - 9] ^= 0x40;
        let mut m = load_base(&enc, &FIXTURE_INPUT);
        assert!(m.feed(&bad).is_err());
        m.rewind_stream();
        let from = m.stream_received() as usize;
        assert_eq!(from, ends[bad_chunk - 1], "resumes at the end of the last good chunk");
        m.feed(&enc.stream[from..]).unwrap();
        m.finish_stream().unwrap();
        assert!(m.status().exact);
        let mut clean = load_base(&enc, &FIXTURE_INPUT);
        clean.feed(&enc.stream).unwrap();
        let x = input(&FIXTURE_INPUT, 5, -1.0, 1.0);
        assert_eq!(output_bits(&m.run(vec![x.clone()]).unwrap().outputs), output_bits(&clean.run(vec![x]).unwrap().outputs));
    }
    // a bad header rewinds to byte 0
    let mut m = load_base(&enc, &FIXTURE_INPUT);
    let mut bad = enc.stream.clone();
    bad[HEADER_PREFIX + 1] ^= 1;
    assert!(m.feed(&bad).is_err());
    m.rewind_stream();
    assert_eq!(m.stream_received(), 0);
    m.feed(&enc.stream).unwrap();
    assert!(m.status().exact);
}

#[test]
fn unknown_precision_codes_are_refused() {
    // a half-precision model's header has the precision flag and a code per tensor
    let half = encode(&half_model(&fixture_model(), tract_onnx::pb::tensor_proto::DataType::Float16), "half", &fixture_options());
    let header = StreamHeader::parse(&half.stream).unwrap();
    let len = StreamHeader::total_len(half.stream[..HEADER_PREFIX].try_into().unwrap()).unwrap();
    let hash = header.tensors[0].hash;
    let at = half.stream.windows(32).position(|w| w == hash).unwrap() + 32;
    let forged = reheader(&half.stream, len, |h| h[at] = 9);
    let err = StreamHeader::parse(&forged).unwrap_err();
    assert!(matches!(&err, Error::Header(m) if m.contains("unknown precision code 9")), "{err}");
    let mut m = load_base(&half, &FIXTURE_INPUT);
    assert!(matches!(m.feed(&forged), Err(Error::Header(_))));
    assert_eq!(m.status().stage, 0, "the base keeps serving");
}
