use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::LakeError;

/// Writes `batches` to `path` as one Parquet file: to `<path>.partial` first, synced, then
/// renamed, so a reader never sees a half-written file.
pub fn write_parquet_atomic(path: &Path, batches: &[RecordBatch]) -> Result<(), LakeError> {
    let Some(first) = batches.first() else {
        return Err(LakeError::Parquet { path: path.to_owned(), message: "nothing to write".into() });
    };
    let partial = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        path.with_file_name(name)
    };
    let io = |p: &Path| {
        let p: PathBuf = p.to_owned();
        move |source| LakeError::Io { path: p, source }
    };
    let pq = |e: parquet::errors::ParquetError| LakeError::Parquet { path: path.to_owned(), message: e.to_string() };
    let result = (|| {
        let file = File::create(&partial).map_err(io(&partial))?;
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let mut writer = ArrowWriter::try_new(file, first.schema(), Some(props)).map_err(pq)?;
        for b in batches {
            writer.write(b).map_err(pq)?;
        }
        let file = writer.into_inner().map_err(pq)?;
        file.sync_all().map_err(io(&partial))?;
        std::fs::rename(&partial, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Reads a whole Parquet file into record batches.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, LakeError> {
    let pq = |e: parquet::errors::ParquetError| LakeError::Parquet { path: path.to_owned(), message: e.to_string() };
    let file = File::open(path).map_err(|source| LakeError::Io { path: path.to_owned(), source })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?.build().map_err(pq)?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LakeError::Parquet { path: path.to_owned(), message: e.to_string() })
}
