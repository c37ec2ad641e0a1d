//! TEMPORARY compile stand-in (not committed); replaced by the real index module.
#![allow(missing_docs, dead_code)]
use crate::error::Result;
use std::path::Path;
pub(crate) struct IndexConfig {
    pub slots_per_file: u32,
    pub entries_per_file: u32,
}
pub(crate) struct IndexStore {
    m: parking_lot::Mutex<Vec<(String, i64, i64)>>,
}
impl IndexStore {
    pub(crate) fn open(_dir: &Path, _cfg: IndexConfig) -> Result<Self> {
        Ok(Self {
            m: Default::default(),
        })
    }
    pub(crate) fn put_record<'a>(
        &self,
        phys: i64,
        ts: i64,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        let mut m = self.m.lock();
        for k in keys {
            m.push((k.to_owned(), phys, ts));
        }
        Ok(())
    }
    pub(crate) fn last_indexed(&self) -> i64 {
        -1
    }
    pub(crate) fn query(&self, key: &str, max: usize, b: i64, e: i64) -> Result<Vec<i64>> {
        Ok(self
            .m
            .lock()
            .iter()
            .rev()
            .filter(|x| x.0 == key && x.2 >= b && x.2 <= e)
            .map(|x| x.1)
            .take(max)
            .collect())
    }
    pub(crate) fn truncate(&self, end: i64) -> Result<()> {
        self.m.lock().retain(|x| x.1 < end);
        Ok(())
    }
    pub(crate) fn delete_before(&self, _min: i64) -> Result<usize> {
        Ok(0)
    }
    pub(crate) fn flush(&self) -> Result<()> {
        Ok(())
    }
}
