"""Users, roles and API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from sqlalchemy import select

from ... import crud, models, schemas
from ..deps import AdminUser, CurrentUser, SessionDep

router = APIRouter(tags=["users"])

UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/users/me", response_model=schemas.UserPublic)
def read_user_me(session: SessionDep, user: CurrentUser) -> schemas.UserPublic:
    """The caller."""
    return crud.user_public(session=session, user=user.user)


@router.get("/users", response_model=list[schemas.UserPublic])
def read_users(session: SessionDep, _: AdminUser) -> list[schemas.UserPublic]:
    """Every user."""
    users = session.scalars(select(models.User).order_by(models.User.id))
    return [crud.user_public(session=session, user=u) for u in users]


@router.post("/users", status_code=201, response_model=schemas.UserPublic)
def create_user(
    session: SessionDep, _: AdminUser, user_in: schemas.UserCreate
) -> schemas.UserPublic:
    """Create a user; a contractor must be given the units it may see."""
    if crud.get_user_by_name(session=session, name=user_in.name) is not None:
        raise HTTPException(status_code=409, detail="User already exists")
    if user_in.role == "contractor" and not user_in.unit_ids:
        raise HTTPException(status_code=422, detail="A contractor needs at least one unit")
    if user_in.role != "contractor" and user_in.unit_ids:
        raise HTTPException(status_code=422, detail="Only a contractor is scoped to units")
    for uid in user_in.unit_ids:
        if session.get(models.Unit, uid) is None:
            raise HTTPException(status_code=422, detail=f"Unit {uid} does not exist")
    user = crud.create_user(session=session, user_in=user_in)
    return crud.user_public(session=session, user=user)


@router.post("/users/{user_id}/tokens", status_code=201, response_model=schemas.TokenCreated)
def create_token(
    session: SessionDep, _: AdminUser, user_id: UserId, token_in: schemas.TokenCreate
) -> schemas.TokenCreated:
    """Issue an API token; the secret is in this response only (stored as a SHA-256 hash)."""
    user = session.get(models.User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail="User not found")
    row, plain = crud.create_token(session=session, user=user, name=token_in.name)
    return schemas.TokenCreated(id=row.id, user_id=user.id, name=row.name, token=plain)
