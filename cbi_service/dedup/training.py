"""Learning the match model from the registry with Splink, without labels.

Splink estimates the model as its documentation recommends: the prior from deterministic rules (same
document; same names and birth date), u by comparing records sampled at random (almost all of them
different people), and m by expectation-maximisation over pairs blocked on one field at a time, so each
field's m is learned from pairs that were not chosen for agreeing on it. The comparison levels are the
service's own (`comparisons`), registered as SQL functions of the engine, so a pair lands on the same
level in training, in sweeps and online.

Term frequencies of given names and surnames are counted over the same records; only names shared by at
least `TF_MIN_COUNT` people are kept in the artefact.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import structlog

from cbi_service.dedup.blocking import blocking_keys
from cbi_service.dedup.comparisons import COMPARISONS, KNOWN_SEXES, sql_levels
from cbi_service.dedup.model import TF_MIN_COUNT, MatchModel
from cbi_service.dedup.normalize import MatchRecord

TF_COLUMNS = {"given_names": "given_tf", "family_names": "family_tf"}
log = structlog.get_logger(__name__)
MIN_RECORDS = 1000  # below this, EM has too few pairs of one person to learn from


class NotEnoughRecords(ValueError):
    """Too small a registry to learn a model from."""


class TrainingFailed(RuntimeError):
    """Splink could not estimate the model from these records."""


def splink_row(ident: str, record: MatchRecord) -> dict[str, Any]:
    """One input row for Splink: the stored profile (what the level functions read), the values term
    frequencies are counted on, and the columns blocking rules join on."""
    dob = record.date_of_birth
    low, high = sorted((dob.month, dob.day))
    return {
        "unique_id": ident,
        "profile": json.dumps(record.to_profile(), separators=(",", ":")),
        "given_tf": " ".join(record.given) or None,
        "family_tf": " ".join(record.family) or None,
        "given_code": record.given_phonetic[0] if record.given else None,
        "family_code": record.family_phonetic[0] if record.family else None,
        "birth": dob.isoformat(),
        "birth_year": dob.year,
        "birth_key": f"{dob.year:04d}{low:02d}{high:02d}",
        "document": record.documents[0].number if record.documents else None,
        "sex": record.sex if record.sex in KNOWN_SEXES else None,
        "nationality": record.nationality,
        "keys": blocking_keys(record),
    }


# The input columns each comparison stands for. They are null exactly when the field is missing (the
# level is then 0 anyway); naming them in the null level tells Splink which comparisons a blocking rule
# has constrained, so EM never learns a field's m from pairs chosen for agreeing on it.
FIELD_COLUMNS = {
    "given_names": ("given_tf", "given_code"),
    "family_names": ("family_tf", "family_code"),
    "date_of_birth": ("birth", "birth_year", "birth_key"),
    "documents": ("document",),
    "sex": ("sex",),
    "nationality": ("nationality",),
}
LEVELS_FUNCTION = "cbi_levels"
LEVELS_SQL = f"{LEVELS_FUNCTION}(profile_l, profile_r)"

# Levels whose m is stated, not learned: one person recorded with another sex or nationality is a clerk's
# slip, rare enough that a registry's duplicate pairs may hold none, and EM would then make the level
# infinitely decisive. One record in a hundred is what a desk without cross-checks gets wrong.
FIXED_M = {("sex", "different"): 0.01, ("nationality", "different"): 0.01}


def comparison_settings(levels_sql: str = LEVELS_SQL) -> list[Any]:
    """The comparisons as Splink sees them: one CASE per field, reading its digit of the pair's levels
    (`levels_sql`, the SQL giving a pair's level digits)."""
    from splink.internals.comparison_library import CustomComparison

    settings: list[Any] = []
    for index, comparison in enumerate(COMPARISONS):
        digit = f"substr({levels_sql}, {index + 1}, 1)"
        missing = " OR ".join(f"{c}_{side} IS NULL" for c in FIELD_COLUMNS[comparison.name] for side in "lr")
        levels: list[Any] = [
            {"sql_condition": f"{missing} OR {digit} = '0'", "label_for_charts": "missing", "is_null_level": True}
        ]
        for level, label in enumerate(comparison.levels[1:], start=1):
            entry: dict[str, Any] = {"sql_condition": f"{digit} = '{level}'", "label_for_charts": label}
            if (comparison.name, label) in FIXED_M:
                entry["m_probability"] = FIXED_M[comparison.name, label]
                entry["fix_m_probability"] = True
            if level == comparison.tf_level and comparison.name in TF_COLUMNS:
                entry["tf_adjustment_column"] = TF_COLUMNS[comparison.name]
                entry["tf_adjustment_weight"] = 1.0
                entry["disable_tf_exact_match_detection"] = True
            levels.append(entry)
        settings.append(
            CustomComparison(
                output_column_name=comparison.name, comparison_levels=levels, comparison_description=comparison.name
            )
        )
    return settings


def _levels_batch(left: Any, right: Any) -> Any:
    import pyarrow as pa

    return pa.array([sql_levels(a, b) for a, b in zip(left.to_pylist(), right.to_pylist(), strict=True)], pa.string())


def register_duckdb_functions(connection: Any) -> None:
    """Make the level function callable from DuckDB SQL, a batch of pairs per call (Arrow)."""
    connection.create_function(
        LEVELS_FUNCTION, _levels_batch, ["VARCHAR", "VARCHAR"], "VARCHAR", type="arrow", side_effects=False
    )


def prediction_rules() -> list[Any]:
    """Pairs worth scoring: those sharing one of the online blocking keys, so a sweep compares what a
    registration would have compared."""
    from splink import block_on

    return [block_on("keys", arrays_to_explode=["keys"])]


def settings_creator(prior: float | None = None, *, levels_sql: str = LEVELS_SQL) -> Any:
    from splink import SettingsCreator

    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=comparison_settings(levels_sql),
        blocking_rules_to_generate_predictions=prediction_rules(),
        probability_two_random_records_match=prior if prior is not None else 0.0001,
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )


def prediction_settings(model: MatchModel, dialect: str, *, levels_sql: str = LEVELS_SQL) -> dict[str, Any]:
    """Splink settings that score pairs with `model` as it is, no training: its prior, and for every level
    m and u whose log2(m/u) is the weight the model gives that level (bounded as the model bounds it; a
    level the model has no parameters for weighs nothing), so Splink's match weight of a pair is the
    model's. Term frequencies come from `term_frequency_tables(model)`, registered beside."""
    settings: dict[str, Any] = settings_creator(model.prior, levels_sql=levels_sql).create_settings_dict(dialect)
    for spec in settings["comparisons"]:
        index, comparison = next((i, c) for i, c in enumerate(COMPARISONS) if c.name == spec["output_column_name"])
        for level in spec["comparison_levels"]:
            if level.get("is_null_level"):
                continue
            number = comparison.level(level["label_for_charts"])
            m, u = model.m[comparison.name][number], model.u[comparison.name][number]
            weight = model.weights[index][number]
            if not m or not u:
                m = u = 0.5
                level.pop("tf_adjustment_column", None)  # the model adjusts nothing without a u
                level.pop("tf_adjustment_weight", None)
            elif weight != math.log2(m / u):  # bounded by the model: the same ratio, from the larger side
                m, u = (m, m / 2**weight) if weight > 0 else (u * 2**weight, u)
            level["m_probability"], level["u_probability"] = m, u
    return settings


def term_frequency_tables(model: MatchModel) -> dict[str, Any]:
    """The model's name frequencies as Splink's lookup tables (input column -> frame with `tf_<column>`);
    a name not listed gets no adjustment, as online."""
    import pandas as pd

    tables = {}
    for name, column in TF_COLUMNS.items():
        values = model.tf.get(name, {})
        tables[column] = pd.DataFrame(
            {column: list(values), f"tf_{column}": [float(v) for v in values.values()]},
            columns=[column, f"tf_{column}"],
        ).astype({column: "string", f"tf_{column}": "float64"})
    return tables


def train(
    records: Iterable[tuple[str, MatchRecord]], *, version: str, seed: int = 1, u_pairs: float = 5e5
) -> MatchModel:
    """Estimate a model from the registry's records (ids and match records), in an embedded DuckDB;
    u from `u_pairs` record pairs drawn at random."""
    import duckdb
    import pandas as pd
    from splink import DuckDBAPI, Linker, block_on

    frame = pd.DataFrame([splink_row(ident, record) for ident, record in records])
    if len(frame) < MIN_RECORDS:
        raise NotEnoughRecords(f"a model needs at least {MIN_RECORDS} records; the registry has {len(frame)}")
    connection = duckdb.connect()
    try:
        register_duckdb_functions(connection)
        table = DuckDBAPI(connection).register(frame)
        linker = Linker(table, settings_creator(), log_level=logging.WARNING)
        training = linker.training
        training.estimate_probability_two_random_records_match(
            [block_on("document"), block_on("given_tf", "family_tf", "birth")], recall=0.8
        )
        training.estimate_u_using_random_sampling(max_pairs=u_pairs, seed=seed)
        learned = 0
        for columns in (("document",), ("given_code", "birth"), ("given_code", "family_code")):
            try:
                training.estimate_parameters_using_expectation_maximisation(
                    block_on(*columns), record_sample_proportion=1.0
                )
            except ValueError as exc:
                # Splink refuses an m that EM drove to exactly 0 (a level only non-matches reach in that block);
                # the session is then discarded whole and the other blocks still estimate the model.
                log.warning("em_session_discarded", blocked_on=list(columns), reason=str(exc)[:200])
                continue
            learned += 1
        if not learned:
            raise TrainingFailed("expectation-maximisation did not converge on any blocking rule")
        saved = linker.misc.save_model_to_json()
        tf = {name: _frequencies(linker, column, len(frame)) for name, column in TF_COLUMNS.items()}
    finally:
        connection.close()
    return model_from_splink(saved, tf, version=version, records=len(frame))


def _frequencies(linker: Any, column: str, total: int) -> dict[str, float]:
    table = linker.table_management.compute_tf_table(column).as_pandas_dataframe()
    minimum = TF_MIN_COUNT / total
    return {
        str(row[column]): float(row[f"tf_{column}"])
        for _, row in table.iterrows()
        if row[column] is not None and float(row[f"tf_{column}"]) >= minimum
    }


def model_from_splink(
    saved: dict[str, Any], tf: dict[str, dict[str, float]], *, version: str, records: int
) -> MatchModel:
    """Our artefact from Splink's saved settings: m and u per level, in our level order."""
    import splink

    m: dict[str, list[float | None]] = {}
    u: dict[str, list[float | None]] = {}
    for comparison in saved["comparisons"]:
        name = comparison["output_column_name"]
        expected = next(c for c in COMPARISONS if c.name == name)
        by_label = {level["label_for_charts"]: level for level in comparison["comparison_levels"]}
        m[name] = [None] + [by_label[label].get("m_probability") for label in expected.levels[1:]]
        u[name] = [None] + [by_label[label].get("u_probability") for label in expected.levels[1:]]
    return MatchModel(
        version=version,
        prior=float(saved["probability_two_random_records_match"]),
        m=m,
        u=u,
        tf=tf,
        trained={
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "records": records,
            "engine": f"splink {splink.__version__} (duckdb)",
        },
    )
