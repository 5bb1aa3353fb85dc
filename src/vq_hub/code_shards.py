"""Code shards: an encoded split written as one Parquet file per process per chunk, so encoding a dataset larger than
memory can run on N processes, be stopped, and resume at the first chunk it had not written.

A shard appears under its final name in one rename (nothing half-written); `encoding.json` lists every shard of
every split (the manifest), written once all processes are done. `vq_hub.data.load_code_dataset` reads the shards of
a split as one dataset, in the manifest's order (chunk by chunk, process by process)."""

import re
from pathlib import Path

SHARD_PATTERN = re.compile(r"^chunk-(\d{6})-process-(\d{3})-of-(\d{3})\.parquet$")


def shard_name(chunk: int, rank: int, world_size: int) -> str:
    return f"chunk-{chunk:06d}-process-{rank:03d}-of-{world_size:03d}.parquet"


def written_chunks(split_dir: Path, rank: int, world_size: int, chunk_size: int) -> int:
    """How many chunks process `rank` has written in a row (chunks are written in order, so they are 0…n−1).
    ValueError when the folder holds shards of another process count or chunk size: which rows a shard holds depends
    on both."""
    found = [SHARD_PATTERN.match(path.name) for path in Path(split_dir).glob("chunk-*.parquet")]
    counts = {int(match.group(3)) for match in found if match}
    if counts - {world_size}:
        raise ValueError(f"{split_dir} holds code shards written by {sorted(counts)} processes: resume on that many "
                         f"processes (not {world_size}), or encode into a new --output_dir")  # fmt: skip
    mine = {int(match.group(1)) for match in found if match and int(match.group(2)) == rank}
    chunks = 0
    while chunks in mine:
        chunks += 1
    sizes = [shard_rows(split_dir, [shard_name(chunk, rank, world_size)]) for chunk in range(chunks)]
    if any(size != chunk_size for size in sizes[:-1]) or (sizes and sizes[-1] > chunk_size):
        raise ValueError(f"{split_dir} holds shards of {sizes[0]} rows: resume with --chunk_size {sizes[0]} (not "
                         f"{chunk_size}), or encode into a new --output_dir")  # fmt: skip
    return chunks


def list_shards(split_dir: Path) -> list[str]:
    """Shard file names of a split in dataset order: by chunk, then by process."""
    names = [path.name for path in Path(split_dir).glob("chunk-*.parquet") if SHARD_PATTERN.match(path.name)]
    return sorted(names, key=lambda name: tuple(int(group) for group in SHARD_PATTERN.match(name).groups()[:2]))


def write_shard(table, path: Path) -> None:
    """`table` (a `datasets.Dataset`) as Parquet at `path`, appearing there complete or not at all."""
    from .utils.io import atomic_file

    with atomic_file(path) as staging:
        table.to_parquet(str(staging))


def shard_rows(split_dir: Path, names: list[str]) -> int:
    """Rows of the shards, read from their Parquet footers (no data read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(Path(split_dir) / name).metadata.num_rows for name in names)
