//! Unit tests of the vector index: exact search against brute force,
//! replacement, deletion, compaction and what a crash or a damaged file
//! leaves.

use super::*;
use rand::{Rng as _, SeedableRng as _};

const D: usize = 24;

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn unit(r: &mut rand::rngs::StdRng, dims: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn items(r: &mut rand::rngs::StdRng, ids: std::ops::Range<i64>, dims: usize) -> Vec<(i64, Vec<f32>)> {
    ids.map(|id| (id, unit(r, dims))).collect()
}

/// The exact answer: every live vector scored with a plain dot product.
fn brute(live: &HashMap<i64, Vec<f32>>, q: &[f32], k: usize) -> Vec<(i64, f32)> {
    let mut all: Vec<(i64, f32)> = live.iter().map(|(id, v)| (*id, v.iter().zip(q).map(|(a, b)| a * b).sum())).collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Same ids in the same order (scores within float rounding); where two
/// scores are too close to order reliably, the ids may swap.
fn assert_same(got: &[(i64, f32)], want: &[(i64, f32)]) {
    assert_eq!(got.len(), want.len(), "got {got:?}\nwant {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g.1 - w.1).abs() < 1e-4, "rank {i}: score {} vs {}\ngot {got:?}\nwant {want:?}", g.1, w.1);
        if g.0 != w.0 {
            let close = want.iter().any(|x| x.0 == g.0 && (x.1 - g.1).abs() < 1e-4);
            assert!(close, "rank {i}: id {} vs {}\ngot {got:?}\nwant {want:?}", g.0, w.0);
        }
    }
}

fn check_all(ix: &VectorIndex, live: &HashMap<i64, Vec<f32>>, r: &mut rand::rngs::StdRng, k: usize) {
    assert_eq!(ix.len(), live.len());
    for _ in 0..20 {
        let q = unit(r, ix.dims());
        let want = brute(live, &q, k);
        assert_same(&ix.search(&q, k), &want);
        assert_same(&ix.search_exact(&q, k), &want);
    }
}

#[test]
fn int8_pass_finds_the_exact_top_k_at_embedding_dims() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(13);
    let dims = 384;
    let mut ix = VectorIndex::open(tmp.path(), dims).unwrap();
    let n = QUANTISED_MIN_ROWS as i64 + 1000;
    let batch = items(&mut r, 0..n, dims);
    ix.append(&batch).unwrap();
    let live: HashMap<i64, Vec<f32>> = batch.into_iter().collect();
    check_all(&ix, &live, &mut r, 10);
    check_all(&ix, &live, &mut r, 50);
    // A query near a stored vector (as a real question near its answer).
    let target = live[&77].iter().zip(unit(&mut r, dims)).map(|(a, b)| a + 0.3 * b).collect::<Vec<f32>>();
    assert_eq!(ix.search(&target, 1)[0].0, 77);
}

#[test]
fn quantisation_round_trips_within_half_a_step() {
    let mut r = rng(14);
    let v = unit(&mut r, 384);
    let (q, s) = quantise(&v);
    assert!(v.iter().zip(&q).all(|(x, q)| (x - f32::from(*q) * s).abs() <= s / 2.0 + 1e-7));
    assert_eq!(q.iter().map(|x| x.unsigned_abs()).max(), Some(127));
    assert_eq!(quantise(&[0.0; 4]), (vec![0; 4], 1.0));
}

#[test]
fn top_k_matches_brute_force_across_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(1);
    let mut ix = VectorIndex::open(tmp.path(), D).unwrap();
    let mut live = HashMap::new();
    for part in 0..4 {
        let batch = items(&mut r, part * 300..(part + 1) * 300, D);
        ix.append(&batch).unwrap();
        live.extend(batch);
    }
    check_all(&ix, &live, &mut r, 10);
    check_all(&ix, &live, &mut r, 1);
    // The stored vector itself is its own best hit.
    let (id, v) = live.iter().next().map(|(i, v)| (*i, v.clone())).unwrap();
    assert_eq!(ix.search(&v, 1)[0].0, id);
}

#[test]
fn large_index_searches_on_several_threads_exactly() {
    // Over PARALLEL_MIN_ROWS rows, in several record batches and files.
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(2);
    let dims = 16;
    let mut ix = VectorIndex::open(tmp.path(), dims).unwrap();
    let mut live = HashMap::new();
    let n = PARALLEL_MIN_ROWS as i64 + 5000;
    let first = items(&mut r, 0..n / 2, dims);
    let second = items(&mut r, n / 2..n, dims);
    ix.append(&first).unwrap();
    ix.append(&second).unwrap();
    live.extend(first);
    live.extend(second);
    for threads in [2, 1, 3] {
        ix.set_search_threads(threads);
        check_all(&ix, &live, &mut r, 10);
        check_all(&ix, &live, &mut r, 100);
    }
}

#[test]
fn replaced_vector_is_not_found_and_len_counts_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(3);
    let mut ix = VectorIndex::open(tmp.path(), D).unwrap();
    let batch = items(&mut r, 0..50, D);
    ix.append(&batch).unwrap();
    let old = batch[7].1.clone();
    let new = unit(&mut r, D);
    // Twice in one batch and again later: the last wins.
    ix.append(&[(7, unit(&mut r, D)), (7, new.clone())]).unwrap();
    assert_eq!(ix.len(), 50);
    let hits = ix.search(&old, 50);
    assert_eq!(hits.iter().filter(|h| h.0 == 7).count(), 1);
    let score7 = hits.iter().find(|h| h.0 == 7).unwrap().1;
    let want: f32 = old.iter().zip(&new).map(|(a, b)| a * b).sum();
    assert!((score7 - want).abs() < 1e-5, "id 7 scored {score7} (its old vector?), new vector gives {want}");
    assert_eq!(ix.search(&new, 1)[0].0, 7);
    // The same after reopening.
    drop(ix);
    let ix = VectorIndex::open(tmp.path(), D).unwrap();
    assert_eq!(ix.len(), 50);
    assert_eq!(ix.search(&new, 1)[0].0, 7);
    assert!((ix.search(&old, 50).iter().find(|h| h.0 == 7).unwrap().1 - want).abs() < 1e-5);
}

#[test]
fn delete_survives_reopen_and_reappend_revives() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(4);
    let mut ix = VectorIndex::open(tmp.path(), D).unwrap();
    let batch = items(&mut r, 0..100, D);
    ix.append(&batch).unwrap();
    let mut live: HashMap<i64, Vec<f32>> = batch.into_iter().collect();
    ix.delete(&[3, 5, 99, 12345]).unwrap();
    for id in [3, 5, 99] {
        live.remove(&id);
    }
    check_all(&ix, &live, &mut r, 10);
    assert!(ix.search(&ix_vector(&live, 4), 100).iter().all(|h| ![3, 5, 99].contains(&h.0)));
    drop(ix);
    let mut ix = VectorIndex::open(tmp.path(), D).unwrap();
    check_all(&ix, &live, &mut r, 10);
    // Appending a deleted id makes it live again, also after reopening.
    let v = unit(&mut r, D);
    ix.append(&[(5, v.clone())]).unwrap();
    live.insert(5, v.clone());
    drop(ix);
    let ix = VectorIndex::open(tmp.path(), D).unwrap();
    check_all(&ix, &live, &mut r, 10);
    assert_eq!(ix.search(&v, 1)[0].0, 5);
}

fn ix_vector(live: &HashMap<i64, Vec<f32>>, id: i64) -> Vec<f32> {
    live[&id].clone()
}

#[test]
fn compaction_keeps_only_live_accepted_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(5);
    let mut ix = VectorIndex::open(tmp.path(), D).unwrap();
    let mut live = HashMap::new();
    for part in 0..3 {
        let b = items(&mut r, part * 40..(part + 1) * 40, D);
        ix.append(&b).unwrap();
        live.extend(b);
    }
    let replaced = items(&mut r, 0..10, D);
    ix.append(&replaced).unwrap();
    live.extend(replaced);
    assert!(!ix.should_compact(), "10 dead of 130 rows: {ix:?}");
    let deleted: Vec<i64> = (20..40).collect();
    ix.delete(&deleted).unwrap();
    for id in &deleted {
        live.remove(id);
    }
    assert!(ix.should_compact(), "30 dead of 130 rows: {ix:?}");
    let before = ix.bytes();
    // Odd ids are segments that never completed: the filter drops them.
    let stats = ix.compact(&|id| id % 2 == 0).unwrap();
    live.retain(|id, _| id % 2 == 0);
    assert_eq!(stats.files_before, 4);
    assert_eq!(stats.rows_before, 130);
    assert_eq!(stats.kept, live.len());
    assert_eq!(stats.dropped, 100 - live.len());
    assert_eq!(stats.bytes_before, before);
    assert!(stats.bytes_after < before);
    assert!(!ix.should_compact());
    check_all(&ix, &live, &mut r, 10);
    // One segment file and no tombstones left on disk.
    let names = dir_names(tmp.path());
    assert_eq!(names.iter().filter(|n| n.starts_with("seg-")).count(), 1, "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("tomb-")), "{names:?}");
    drop(ix);
    let ix = VectorIndex::open(tmp.path(), D).unwrap();
    check_all(&ix, &live, &mut r, 10);
    assert_eq!(ix.bytes(), stats.bytes_after);
}

#[test]
fn compaction_to_nothing_leaves_an_empty_index() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(6);
    let mut ix = VectorIndex::open(tmp.path(), D).unwrap();
    ix.append(&items(&mut r, 0..10, D)).unwrap();
    let stats = ix.compact(&|_| false).unwrap();
    assert_eq!((stats.kept, stats.dropped, stats.bytes_after), (0, 10, 0));
    assert!(ix.is_empty());
    assert!(ix.search(&unit(&mut r, D), 5).is_empty());
    assert_eq!(dir_names(tmp.path()), vec!["MANIFEST".to_owned()]);
    assert!(VectorIndex::open(tmp.path(), D).unwrap().is_empty());
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn files_of_an_interrupted_change_are_ignored_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(7);
    let mut ix = VectorIndex::open(tmp.path(), D).unwrap();
    let batch = items(&mut r, 0..20, D);
    ix.append(&batch).unwrap();
    let live: HashMap<i64, Vec<f32>> = batch.into_iter().collect();
    // A crash after the segment and tombstone files were written but before
    // the manifest named them: simulate by writing them by hand.
    let names = dir_names(tmp.path());
    let seg = names.iter().find(|n| n.starts_with("seg-")).unwrap();
    fs::copy(tmp.path().join(seg), tmp.path().join("seg-00000099.arrow")).unwrap();
    fs::write(tmp.path().join("tomb-00000100.bin"), b"EVTOMB01garbage").unwrap();
    fs::write(tmp.path().join(MANIFEST_TMP), b"{half a manif").unwrap();
    fs::write(tmp.path().join("notes.txt"), b"not ours").unwrap();
    drop(ix);
    let ix = VectorIndex::open(tmp.path(), D).unwrap();
    check_all(&ix, &live, &mut r, 5);
    assert_eq!(dir_names(tmp.path()), vec!["MANIFEST".to_owned(), "notes.txt".to_owned(), seg.clone()]);
}

#[cfg(feature = "failpoints")]
#[test]
fn a_change_interrupted_before_the_manifest_is_not_visible() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(15);
    let mut ix = VectorIndex::open(tmp.path(), D).unwrap();
    let batch = items(&mut r, 0..20, D);
    ix.append(&batch).unwrap();
    let mut live: HashMap<i64, Vec<f32>> = batch.into_iter().collect();
    let files_before = dir_names(tmp.path());
    fail::cfg("vectors-before-manifest", &format!("return({})", tmp.path().display())).unwrap();
    let appended = ix.append(&items(&mut r, 20..30, D));
    let deleted = ix.delete(&[1, 2]);
    let compacted = ix.compact(&|_| true);
    fail::remove("vectors-before-manifest");
    assert!(matches!(appended, Err(VectorError::Io { .. })), "{appended:?}");
    assert!(matches!(deleted, Err(VectorError::Io { .. })), "{deleted:?}");
    assert!(matches!(compacted, Err(VectorError::Io { .. })), "{compacted:?}");
    // Nothing changed, in memory or after reopening, and the stray files go.
    check_all(&ix, &live, &mut r, 5);
    drop(ix);
    let mut ix = VectorIndex::open(tmp.path(), D).unwrap();
    check_all(&ix, &live, &mut r, 5);
    assert_eq!(dir_names(tmp.path()), files_before);
    // And the index takes changes again.
    let more = items(&mut r, 20..30, D);
    ix.append(&more).unwrap();
    live.extend(more);
    check_all(&ix, &live, &mut r, 5);
}

#[test]
fn damaged_files_give_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(8);
    let mut ix = VectorIndex::open(tmp.path(), D).unwrap();
    ix.append(&items(&mut r, 0..20, D)).unwrap();
    ix.delete(&[1]).unwrap();
    drop(ix);
    let names = dir_names(tmp.path());
    let seg = tmp.path().join(names.iter().find(|n| n.starts_with("seg-")).unwrap());
    let tomb = tmp.path().join(names.iter().find(|n| n.starts_with("tomb-")).unwrap());
    let good = fs::read(&seg).unwrap();

    let expect_corrupt = |file: &Path, what: &str| match VectorIndex::open(tmp.path(), D) {
        Err(VectorError::Corrupt { path, reason }) => {
            assert_eq!(path, file, "{what}: {reason}");
            let msg = VectorError::Corrupt { path: path.clone(), reason }.to_string();
            assert!(msg.contains(&*file.to_string_lossy()), "{msg}");
        }
        other => panic!("{what}: expected Corrupt naming {}, got {other:?}", file.display()),
    };
    // Truncated at several points: footer, body, header.
    for cut in [good.len() - 3, good.len() - 40, good.len() / 2, 12, 3] {
        fs::write(&seg, &good[..cut]).unwrap();
        expect_corrupt(&seg, &format!("truncated to {cut}"));
    }
    // Damage anywhere never panics: an error names the file, or (vector
    // values hit, which no format can tell) the index opens.
    let mut refused = 0;
    for at in (0..good.len() - 4).step_by(4) {
        let mut bad = good.clone();
        bad[at..at + 4].copy_from_slice(&[0xff, 0x7f, 0xff, 0x7f]);
        fs::write(&seg, &bad).unwrap();
        match VectorIndex::open(tmp.path(), D) {
            Err(VectorError::Corrupt { path, .. }) => {
                assert_eq!(path, seg);
                refused += 1;
            }
            Ok(ix) => drop(ix.search(&unit(&mut rng(at as u64), D), 5)),
            Err(e) => panic!("damaged at {at}: {e:?}"),
        }
    }
    assert!(refused > 10, "only {refused} damaged copies refused");
    // The footer's length in the trailer, and the footer itself.
    let mut bad = good.clone();
    let at = good.len() - 10;
    bad[at..at + 4].copy_from_slice(&[0xff, 0xff, 0, 0]);
    fs::write(&seg, &bad).unwrap();
    expect_corrupt(&seg, "footer length damaged");
    let mut bad = good.clone();
    let footer_len = u32::from_le_bytes(good[at..at + 4].try_into().unwrap()) as usize;
    bad[at - footer_len..at].fill(0xee);
    fs::write(&seg, &bad).unwrap();
    expect_corrupt(&seg, "footer damaged");
    fs::write(&seg, &good).unwrap();
    fs::write(&tomb, b"EVTOMB01\x05\0\0\0\0\0\0\0short").unwrap();
    expect_corrupt(&tomb, "short tombstones");
    fs::remove_file(&tomb).unwrap();
    match VectorIndex::open(tmp.path(), D) {
        Err(e @ VectorError::Io { .. }) => assert!(e.to_string().contains(&*tomb.to_string_lossy()), "{e}"),
        other => panic!("missing tombstone file: {other:?}"),
    }
    fs::write(tmp.path().join(MANIFEST), b"{\"format\":").unwrap();
    expect_corrupt(&tmp.path().join(MANIFEST), "half a manifest");
}

#[test]
fn another_dims_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(9);
    let mut ix = VectorIndex::open(tmp.path(), D).unwrap();
    ix.append(&items(&mut r, 0..3, D)).unwrap();
    match ix.append(&[(9, vec![0.5; D + 1])]) {
        Err(VectorError::WrongLength { id: 9, got, expected }) => assert_eq!((got, expected), (D + 1, D)),
        other => panic!("{other:?}"),
    }
    match ix.append(&[(10, vec![f32::NAN; D])]) {
        Err(VectorError::NonFinite { id: 10 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(ix.len(), 3);
    assert!(ix.search(&[0.1; D + 1], 3).is_empty());
    drop(ix);
    match VectorIndex::open(tmp.path(), 384) {
        Err(e @ VectorError::DimsMismatch { found: D, expected: 384, .. }) => {
            assert!(e.to_string().contains("24-dimensional"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(VectorIndex::open(tmp.path(), 0), Err(VectorError::UnsupportedDims { dims: 0, .. })));
    // Even an empty index remembers its dims.
    let empty = tempfile::tempdir().unwrap();
    drop(VectorIndex::open(empty.path(), 8).unwrap());
    assert!(matches!(VectorIndex::open(empty.path(), 16), Err(VectorError::DimsMismatch { found: 8, .. })));
}

#[test]
fn empty_index_and_k_beyond_len() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new/dataset");
    let mut r = rng(10);
    let mut ix = VectorIndex::open(&dir, D).unwrap();
    assert!(ix.is_empty());
    assert!(ix.search(&unit(&mut r, D), 10).is_empty());
    assert!(!ix.should_compact());
    ix.append(&[]).unwrap();
    ix.delete(&[1]).unwrap();
    assert_eq!(dir_names(&dir), vec!["MANIFEST".to_owned()]);
    let batch = items(&mut r, 0..3, D);
    ix.append(&batch).unwrap();
    let live: HashMap<i64, Vec<f32>> = batch.into_iter().collect();
    let q = unit(&mut r, D);
    assert_same(&ix.search(&q, 10), &brute(&live, &q, 3));
    assert!(ix.search(&q, 0).is_empty());
}

#[test]
fn vectors_are_read_from_the_mapping_not_copied() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(11);
    let mut ix = VectorIndex::open(tmp.path(), D).unwrap();
    ix.append(&items(&mut r, 0..10, D)).unwrap();
    drop(ix);
    let ix = VectorIndex::open(tmp.path(), D).unwrap();
    let ptr = ix.chunks[0].vectors.as_ptr() as usize;
    // The pointer lies in a file mapping of this process.
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    let seg = dir_names(tmp.path()).into_iter().find(|n| n.starts_with("seg-")).unwrap();
    let in_file = maps.lines().filter(|l| l.ends_with(&seg)).any(|l| {
        let range = l.split_whitespace().next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap());
        (a..b).contains(&ptr)
    });
    assert!(in_file, "vectors at {ptr:#x} are not in the mapping of {seg}");
}

#[test]
fn dot_kernels_agree_with_a_plain_sum() {
    let mut r = rng(12);
    for dims in [1, 7, 31, 32, 33, 384, 1000] {
        let (a, b) = (unit(&mut r, dims), unit(&mut r, dims));
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot::<false>(&a, &b) - plain).abs() < 1e-5, "dims {dims}");
        assert!((dot::<true>(&a, &b) - plain).abs() < 1e-5, "dims {dims}");
        let (qa, qb) = (quantise(&a).0, quantise(&b).0);
        let plain_i8: i32 = qa.iter().zip(&qb).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
        assert_eq!(dot_i8(&qa, &qb), plain_i8, "dims {dims}");
    }
}

#[test]
fn index_is_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<VectorIndex>();
}
