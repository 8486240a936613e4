"""The bulk import's job: fetch the stored upload, then register it chunk by chunk (`imports`).

Each chunk is one transaction with the import's progress, so a worker that crashes or is asked to stop
(`ctx.checkpoint`) leaves a job the next worker resumes after the last committed row.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path

from cbi_service.audit.service import record_audit
from cbi_service.beneficiaries import sweeps  # noqa: F401 - hands the registry to dedup's sweeps and training
from cbi_service.beneficiaries.imports import (
    CHUNK_ROWS,
    JOB_KIND,
    MAX_ATTEMPTS,
    count_rows,
    process_chunk,
    raw_chunks,
    registry_checks,
    validated_chunks,
)
from cbi_service.beneficiaries.repository import ImportRepository
from cbi_service.jobs.service import JobContext, JobInterrupted, job_handler
from cbi_service.kit.tabular import TableLimits, UnreadableFile


async def _download(ctx: JobContext, import_id: uuid.UUID, path: Path) -> None:
    with path.open("wb") as out:
        seq = 0
        while True:
            async with ctx.session_factory() as session:
                piece = await ImportRepository(session).chunk(import_id, seq)
            if piece is None:
                return
            out.write(piece)
            seq += 1


async def _finish(ctx: JobContext, import_id: uuid.UUID, status: str, error: str | None = None) -> None:
    async with ctx.session_factory.begin() as session:
        repo = ImportRepository(session)
        imp = await repo.get(import_id, for_update=True)
        if imp is None:
            return
        imp.status = status
        imp.error = error
        imp.finished_at = datetime.now(UTC)
        if status == "completed":
            imp.rows_total = imp.rows_done
        await repo.drop_file(import_id)
        await record_audit(
            session, None, f"beneficiary_import.{status}", "beneficiary_import", import_id, None,
            {"counts": imp.counts, "rows_done": imp.rows_done, "error": error},
        )  # fmt: skip


@job_handler(JOB_KIND)
async def run_import(ctx: JobContext) -> None:
    import_id = uuid.UUID(ctx.payload["import_id"])
    async with ctx.session_factory.begin() as session:
        repo = ImportRepository(session)
        imp = await repo.get(import_id, for_update=True)
        if imp is None or imp.status in {"completed", "failed"}:
            return
        file_format = imp.file_format
        done_through = await repo.rows_through(import_id)
    limits = TableLimits.of(ctx.state.settings)
    with tempfile.TemporaryDirectory(prefix="cbi-import-") as tmp:
        path = Path(tmp) / f"upload.{file_format}"
        await _download(ctx, import_id, path)
        try:
            total = await asyncio.to_thread(count_rows, path, file_format, limits)
            async with ctx.session_factory.begin() as session:
                imp = await ImportRepository(session).get(import_id, for_update=True)
                assert imp is not None
                imp.status, imp.rows_total = "running", total

            chunks = raw_chunks(path, file_format, done_through, limits)
            parallel = (total or 0) - done_through > CHUNK_ROWS
            async with aclosing(validated_chunks(chunks, parallel=parallel)) as validated:
                async for chunk in validated:
                    external = await registry_checks(ctx.state.settings, chunk)
                    async with ctx.session_factory.begin() as session:
                        imp = await ImportRepository(session).get(import_id, for_update=True)
                        assert imp is not None
                        await process_chunk(session, imp, chunk, external)
                    ctx.checkpoint()
        except UnreadableFile as exc:
            await _finish(ctx, import_id, "failed", str(exc))
            return
        except JobInterrupted:
            raise
        except Exception:
            # Not the file's fault (an external registry down, the database gone): the job is retried and
            # resumes after the last committed chunk; after the last attempt the import reports failure.
            if ctx.attempt >= MAX_ATTEMPTS:
                await _finish(ctx, import_id, "failed", "stopped after repeated failures; rows reported so far stand")
            raise
    await _finish(ctx, import_id, "completed")
