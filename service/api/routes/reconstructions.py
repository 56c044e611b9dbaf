"""Reconstruction jobs: create (sync or async), poll, cancel, download the image."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import DispatcherDep, JobsDep, SettingsDep, TenantDep, ZooDep
from service.api.validate import prepare_reconstruction
from service.errors import (
    Conflict,
    NotAcceptable,
    ReconstructionFailed,
    ServiceError,
    documented,
    to_service_error,
)
from service.imaging import MEDIA_TYPES, Format, Scale, encode_image
from service.jobs import Job, Jobs
from service.schemas import (
    EquivarianceScore,
    Problem,
    ReconstructionCreate,
    ReconstructionPublic,
    Timings,
)
from service.wire import ArrayModel
from service.worker import Outcome

__all__ = ["public", "router"]

router = APIRouter(tags=["reconstruction"])

_ASYNC: dict[int | str, dict[str, Any]] = {
    202: {"model": ReconstructionPublic,
          "description": "Accepted: queued or still running; poll the `Location` header"}
}


def _problem(job: Job) -> ServiceError:
    assert job.error is not None
    # The dispatcher logged the traceback; the client gets a stable, opaque problem.
    return to_service_error(
        job.error, ReconstructionFailed("the worker failed on this request; see the service log")
    )


def public(job: Job) -> ReconstructionPublic:
    """The job as the API shows it: status, and the result once it succeeded."""
    view: dict[str, Any] = {
        "id": job.id, "status": job.status, "model": job.model, "family": job.family
    }
    if job.status == "failed":
        view["error"] = Problem.model_validate(_problem(job).problem())
    out: Outcome | None = job.result if job.status == "succeeded" else None
    if out is not None:
        score = out.equivariance
        view |= {
            "image": ArrayModel.of(out.image),
            "data_consistency": out.data_consistency,
            "iterations": out.iterations,
            "timings": Timings(queue_ms=job.queue_ms, compute_ms=out.compute_ms),
            "equivariance": None if score is None else EquivarianceScore(
                score=score.score, score_db=score.score_db, group=score.group,  # type: ignore[arg-type]
                transforms=score.transforms,
                map=None if score.map is None else ArrayModel.of(score.map),
            ),
        }
    return ReconstructionPublic(**view)


def _preferences(prefer: str | None) -> dict[str, str]:
    """``Prefer`` (RFC 7240) as {token: value}: ``respond-async``, ``wait=<seconds>``."""
    found: dict[str, str] = {}
    for part in (prefer or "").split(","):
        name, _, value = part.split(";")[0].strip().partition("=")
        if name:
            found[name.lower()] = value.strip().strip('"')
    return found


def _sync_wait(preferences: dict[str, str], limit: float) -> float:
    """Seconds to wait for the result: ``Prefer: wait=N``, at most EQUIRECON_REQUEST_TIMEOUT_S."""
    try:
        wanted = float(preferences["wait"])
    except (KeyError, ValueError):
        return limit
    return min(max(wanted, 0.0), limit)


def _fingerprint(body: ReconstructionCreate) -> str:
    return hashlib.sha256(body.model_dump_json().encode("utf-8")).hexdigest()


async def _wait(jobs: Jobs, job: Job, timeout: float) -> bool:
    """Wait (without a thread) until the job is terminal; False after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def wake(_: Job) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(done.set)

    jobs.on_done(job, wake)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        return False
    return True


@router.post(
    "/v1/reconstructions",
    response_model=ReconstructionPublic,
    responses={**_ASYNC, **documented(400, 409, 413, 422, 429, 500, 503)},
)
async def create_reconstruction(
    body: ReconstructionCreate,
    response: Response,
    zoo: ZooDep,
    jobs: JobsDep,
    dispatcher: DispatcherDep,
    settings: SettingsDep,
    tenant: TenantDep,
    prefer: Annotated[
        str | None,
        Header(description="`respond-async`: answer 202 at once; `wait=N`: wait at most N s"),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="a retry with the same key gets the same job back"),
    ] = None,
) -> ReconstructionPublic:
    """Reconstruct: 200 with the result, or 202 + Location if async or still running."""
    # Announced from here to the submit, so that a micro-batch waits for this request.
    with dispatcher.announce():
        task = await run_in_threadpool(prepare_reconstruction, body, zoo)
        job = jobs.create(body.model, task.op.family, task, tenant)
        prior = None
        if idempotency_key is not None:
            try:
                prior = jobs.bind_key(tenant, idempotency_key, _fingerprint(body), job)
            except Conflict:
                jobs.discard(job)
                raise
        if prior is not None:
            jobs.discard(job)
            job = prior
        else:
            try:
                if dispatcher.blocking_submit:
                    await run_in_threadpool(dispatcher.submit, job)
                else:
                    dispatcher.submit(job)
            except Exception:
                jobs.discard(job)
                if idempotency_key is not None:
                    jobs.unbind_key(tenant, idempotency_key)
                raise
    preferences = _preferences(prefer)
    if "respond-async" in preferences:
        response.headers["Preference-Applied"] = "respond-async"
    elif await _wait(jobs, job, _sync_wait(preferences, settings.request_timeout_s)):
        job = jobs.get(job.id, tenant)
        if job.status == "failed":
            raise _problem(job)
        if job.status == "cancelled":
            raise Conflict(f"reconstruction {job.id} was cancelled")
        return public(job)
    response.status_code = 202
    response.headers["Location"] = f"/v1/reconstructions/{job.id}"
    return public(job)


@router.get(
    "/v1/reconstructions/{job_id}", response_model=ReconstructionPublic,
    responses=documented(404, 503),
)
def get_reconstruction(job_id: str, jobs: JobsDep, tenant: TenantDep) -> ReconstructionPublic:
    """Status of a job and, once it succeeded, its result."""
    return public(jobs.get(job_id, tenant))


@router.delete(
    "/v1/reconstructions/{job_id}", response_model=ReconstructionPublic,
    responses=documented(404, 409, 503),
)
def cancel_reconstruction(
    job_id: str, jobs: JobsDep, dispatcher: DispatcherDep, tenant: TenantDep
) -> ReconstructionPublic:
    """Cancel a queued or running job (409 if it already finished)."""
    job = jobs.cancel(job_id, tenant)
    dispatcher.cancel(job_id)
    return public(job)


@router.get(
    "/v1/reconstructions/{job_id}/image",
    response_class=Response,
    responses={
        200: {
            "description": "The image file",
            "content": {t: {"schema": {"type": "string", "format": "binary"}}
                        for t in MEDIA_TYPES.values()},
        },
        **documented(404, 406, 409, 422, 503),
    },
)
async def get_image(
    job_id: str,
    jobs: JobsDep,
    tenant: TenantDep,
    fmt: Annotated[Format, Query(alias="format", description="npy | png | dcm")] = "npy",
    scale: Annotated[Scale, Query(description="png only: clip [0,1] or stretch min..max")] = "clip",
) -> Response:
    """The reconstructed image as a .npy or 8-bit .png file."""
    job = jobs.get(job_id, tenant)
    if fmt == "dcm":
        raise NotAcceptable("DICOM export is not available yet (pydicom is not installed)")
    if job.status != "succeeded":
        raise Conflict(f"reconstruction {job_id} is {job.status}; it has no image")
    data = await run_in_threadpool(encode_image, job.result.image, fmt, scale)
    return Response(
        data, media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{job_id}.{fmt}"'},
    )
