"""Grid carbon intensity of a country from codecarbon's offline data (no network)."""

from __future__ import annotations

from functools import cache

from orchestrator.errors import InputError


@cache
def carbon_intensity_kg_per_kwh(country_iso_code: str) -> float:
    """kg CO₂ per kWh for an ISO 3166-1 alpha-3 country, as codecarbon's offline tracker would use."""
    from codecarbon.core.emissions import Emissions
    from codecarbon.core.units import Energy
    from codecarbon.external.geography import GeoMetadata
    from codecarbon.input import DataSource

    source = DataSource()
    code = country_iso_code.upper()
    if code not in source.get_global_energy_mix_data():
        raise InputError(
            "telemetry.country_iso_code",
            f"no carbon data for {country_iso_code!r}",
            "use an ISO 3166-1 alpha-3 code such as USA, FRA, DEU, IND",
        )
    return float(Emissions(source).get_country_emissions(Energy.from_energy(kWh=1), GeoMetadata(country_iso_code=code)))
