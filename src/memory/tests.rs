use std::sync::Arc;

use super::*;

fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn layout(dim: usize) -> Layout {
    Layout {
        key: KeyType::I64,
        value: ValueType::F32,
        dim,
    }
}

fn read(s: &Store, keys: &[i64]) -> Vec<Option<Vec<u8>>> {
    let k = i64s(keys);
    let out = std::sync::Mutex::new(vec![None; keys.len()]);
    s.get(&Keys::new(KeyType::I64, &k, &[]).unwrap(), |p, v| {
        out.lock().unwrap()[p] = v.map(<[u8]>::to_vec)
    })
    .unwrap();
    out.into_inner().unwrap()
}

#[test]
fn last_occurrence_wins_and_every_duplicate_reads_the_row() {
    let s = Store::new("t", layout(1), None);
    let k = i64s(&[1, 2, 1]);
    let keys = Keys::new(KeyType::I64, &k, &[]).unwrap();
    s.put(
        &keys,
        &Rows::Fixed {
            data: &f32s(&[1.0, 2.0, 3.0]),
            row: 4,
        },
    )
    .unwrap();
    assert_eq!(s.rows(), 2);
    let got = read(&s, &[1, 3, 1]);
    assert_eq!(got, vec![Some(f32s(&[3.0])), None, Some(f32s(&[3.0]))]);
}

#[test]
fn large_batches_spread_over_shards_in_parallel_and_agree() {
    let s = Store::new("big", layout(2), None);
    let ids: Vec<i64> = (0..20_000).collect();
    let k = i64s(&ids);
    let vals: Vec<f32> = ids.iter().flat_map(|&i| [i as f32, -(i as f32)]).collect();
    let keys = Keys::new(KeyType::I64, &k, &[]).unwrap();
    s.put(
        &keys,
        &Rows::Fixed {
            data: &f32s(&vals),
            row: 8,
        },
    )
    .unwrap();
    assert_eq!(s.rows(), 20_000);
    let got = read(&s, &ids);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, r)| r.as_deref() == Some(&f32s(&vals[2 * i..2 * i + 2])[..])));
    let mut n = 0;
    s.for_each(|k, v| {
        let i = i64::from_le_bytes(k.try_into().unwrap());
        assert_eq!(v, &f32s(&[i as f32, -(i as f32)])[..]);
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 20_000);
    s.remove(&keys.sub(0, 15_000)).unwrap();
    assert_eq!(s.rows(), 5_000);
    s.clear();
    assert!(s.rows() == 0 && read(&s, &[19_999]) == vec![None]);
}

#[test]
fn accum_follows_tfra_per_occurrence_in_order() {
    let s = Store::new("a", layout(1), None);
    let k = i64s(&[1]);
    s.put(
        &Keys::new(KeyType::I64, &k, &[]).unwrap(),
        &Rows::Fixed {
            data: &f32s(&[1.0]),
            row: 4,
        },
    )
    .unwrap();
    // 1: present+exists adds (twice); 2: absent+!exists sets, then exists adds; 3: absent+exists drops.
    let k = i64s(&[1, 2, 1, 2, 3]);
    let d = f32s(&[0.5, 2.0, 0.25, 1.0, 9.0]);
    s.accum(
        &Keys::new(KeyType::I64, &k, &[]).unwrap(),
        &d,
        &[1, 0, 1, 1, 1],
    )
    .unwrap();
    assert_eq!(
        read(&s, &[1, 2, 3]),
        vec![Some(f32s(&[1.75])), Some(f32s(&[3.0])), None]
    );
}

#[test]
fn the_row_cap_refuses_new_rows_naming_table_and_cap_but_allows_updates() {
    let s = Store::new("capped", layout(1), Some(2));
    let put = |ids: &[i64]| {
        let k = i64s(ids);
        let v = f32s(&vec![1.0; ids.len()]);
        s.put(
            &Keys::new(KeyType::I64, &k, &[]).unwrap(),
            &Rows::Fixed { data: &v, row: 4 },
        )
    };
    put(&[1, 2]).unwrap();
    put(&[1, 2]).unwrap();
    let e = put(&[3]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
    assert!(
        e.to_string().contains("\"capped\"") && e.to_string().contains("rde_memory_max_rows = 2"),
        "{e}"
    );
    assert_eq!(s.rows(), 2);
    s.remove(&Keys::new(KeyType::I64, &i64s(&[1]), &[]).unwrap())
        .unwrap();
    put(&[3]).unwrap();
}

#[test]
fn the_registry_shares_by_tag_name_and_layout_and_frees() {
    let a = registry::open("reg-tag", "e", layout(2), None).unwrap();
    let b = registry::open("reg-tag", "e", layout(2), None).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let other = registry::open("reg-tag2", "e", layout(2), None).unwrap();
    assert!(!Arc::ptr_eq(&a, &other));
    let wide = registry::open("reg-tag", "e", layout(3), None).unwrap();
    assert!(!Arc::ptr_eq(&a, &wide));
    let k = i64s(&[1]);
    a.put(
        &Keys::new(KeyType::I64, &k, &[]).unwrap(),
        &Rows::Fixed {
            data: &f32s(&[1.0, 2.0]),
            row: 8,
        },
    )
    .unwrap();
    drop((a, b));
    let fresh = registry::open("reg-tag", "e", layout(2), None).unwrap();
    assert_eq!(fresh.rows(), 0, "the last table's close freed the rows");
}

#[test]
fn string_keys_with_string_values() {
    let s = Store::new(
        "s",
        Layout {
            key: KeyType::Str,
            value: ValueType::Str,
            dim: 2,
        },
        None,
    );
    let (kd, ko) = (b"abc".to_vec(), vec![0u64, 1, 3]);
    let keys = Keys::new(KeyType::Str, &kd, &ko).unwrap();
    let (vd, vo) = (b"xyz".to_vec(), vec![0u64, 1, 1, 2, 3]);
    s.put(
        &keys,
        &Rows::Str {
            data: &vd,
            offsets: &vo,
            dim: 2,
        },
    )
    .unwrap();
    let got = std::sync::Mutex::new(Vec::new());
    s.get(&keys, |p, v| {
        got.lock().unwrap().push((p, v.map(<[u8]>::to_vec)))
    })
    .unwrap();
    let mut got = got.into_inner().unwrap();
    got.sort();
    let row = |parts: &[&[u8]]| {
        let mut out = Vec::new();
        for p in parts {
            out.extend((p.len() as u32).to_le_bytes());
            out.extend(*p);
        }
        Some(out)
    };
    assert_eq!(got, vec![(0, row(&[b"x", b""])), (1, row(&[b"y", b"z"]))]);
}
