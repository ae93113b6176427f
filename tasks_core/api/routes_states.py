"""``/v1/states``: state objects."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from tasks_core.api.auth import CallerDep, StoreDep
from tasks_core.api.routes_tasks import ERRORS
from tasks_core.api.schemas import StateCreate, StateOut, state_out
from tasks_core.usecases.states import create_state, get_state

router = APIRouter(prefix="/v1/states", tags=["states"], responses=ERRORS)


@router.post("", status_code=201, response_model=StateOut, summary="Create state")
def create(*, body: StateCreate, caller: CallerDep, store: StoreDep) -> JSONResponse:
    """A named container of variables (a JSON object), at version 1."""
    state = create_state(store, caller, name=body.name, variables=body.variables)
    return JSONResponse(state_out(state), status_code=201)


@router.get("/{stateId}", response_model=StateOut, summary="Get state")
def get(
    *,
    state_id: Annotated[str, Path(alias="stateId")],
    caller: CallerDep,
    store: StoreDep,
) -> JSONResponse:
    """A state object of the caller's organization."""
    return JSONResponse(state_out(get_state(store, caller, state_id)))
