"""Organisations, units and sites."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from ... import crud, models, schemas
from ..deps import CurrentUser, RegistryEditor, SessionDep

router = APIRouter(tags=["registry"])


@router.post("/organisations", status_code=201, response_model=schemas.OrganisationPublic)
def create_organisation(
    session: SessionDep, _: RegistryEditor, org_in: schemas.OrganisationCreate
) -> models.Organisation:
    """Register an organisation."""
    if crud.get_organisation_by_name(session=session, name=org_in.name) is not None:
        raise HTTPException(status_code=409, detail="Organisation already exists")
    return crud.create_organisation(session=session, org_in=org_in)


@router.post("/units", status_code=201, response_model=schemas.UnitPublic)
def create_unit(session: SessionDep, _: RegistryEditor, unit_in: schemas.UnitCreate) -> models.Unit:
    """Register a key unit or a micro fire station."""
    if session.get(models.Organisation, unit_in.organisation_id) is None:
        raise HTTPException(status_code=422, detail="Organisation does not exist")
    return crud.create_unit(session=session, unit_in=unit_in)


@router.get("/units", response_model=schemas.UnitsPublic)
def read_units(session: SessionDep, user: CurrentUser) -> schemas.UnitsPublic:
    """Units the caller may see."""
    units = crud.list_units(session=session, unit_ids=user.unit_ids)
    return schemas.UnitsPublic(
        data=[schemas.UnitPublic.model_validate(u) for u in units], count=len(units)
    )


@router.post("/sites", status_code=201, response_model=schemas.SitePublic)
def create_site(session: SessionDep, _: RegistryEditor, site_in: schemas.SiteCreate) -> models.Site:
    """Register a site or building of a unit."""
    if session.get(models.Unit, site_in.unit_id) is None:
        raise HTTPException(status_code=422, detail="Unit does not exist")
    return crud.create_site(session=session, site_in=site_in)
