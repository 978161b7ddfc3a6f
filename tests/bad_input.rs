//! Bad streams: every failure is a typed error, and the model keeps serving
//! its last good stage.

mod common;

use common::*;
use p2u::format::stream::{read_all, StreamHeader, CHUNK_PREFIX, HEADER_PREFIX};
use p2u::{Error, ProgressiveModel};

fn fixture() -> (p2u::Encoded, usize) {
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
fn assert_serves_prefix(m: &mut ProgressiveModel, enc: &p2u::Encoded, good_end: usize, good_chunks: u64) {
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
    forged.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    let err = StreamHeader::parse(&forged).unwrap_err();
    assert!(matches!(err, Error::Header(_)), "{err}");

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
