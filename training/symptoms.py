"""The symptom stack: how the answers to the six questions about a lesion (deepskin.core.patient.QUESTIONS)
move P(malignant), on top of the image model, fitted on PAD-UFES-20 and written into the model card.

    python -m training.symptoms [--model models/deepskin.onnx] [--pad DIR] [--reports training/reports]

1. Answer weights, on PAD-UFES-20 train. They never look at the image, so the image model's in-sample scores
   there play no part. A logistic regression of "malignant" (akiec counted, like the model's P(malignant))
   on the answers: each coded 1 for yes, 0 for no, minus its share of "yes" among the train answers, and 0
   when unknown, so that an unknown answer adds nothing. L2-regularised, and every weight held at or above 0:
   a reported warning sign never lowers the chance. (PAD counts actinic keratoses, flat and seldom growing,
   as malignant, which pulls "grew" and "raised" below 0 when unconstrained: the report shows that fit.)
   One option: the answer weights adjusted for age (age as a covariate). Age itself is the image model's
   input, so only the answer weights are served.
2. The combination, on PAD-UFES-20 val, scored through the one assessment path (deepskin.core.pipeline,
   the photo alone): logit P' = logit P + b * S, where S is the answers' score and b >= 0 is fitted with a
   small L2 penalty. The free fit a * logit P + b * S + c is reported but not served: an unknown answer must
   shift nothing, and on val it fits no better. The option (age-adjusted or not) with the lower val
   log-loss is kept.
3. PAD-UFES-20 val and test through the pipeline with the stacked card, with and without answers (and with
   and without age, sex and site): ROC-AUC with patient-grouped bootstrap intervals, with actinic keratosis
   counted malignant and benign, and the band shares per class.

The card gets `symptoms` (the log-odds of each answer, where it applies, the data and the numbers) and
training/reports/ gets symptoms.md and symptoms.json. The stack belongs to one image model: a retrained model's
card has none until this is run again, and its answers then only keep the never-"low" rule.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from deepskin.core.bundle import BUNDLED_MODEL, card_path
from deepskin.core.labels import MALIGNANT
from deepskin.core.model import Model, logit
from deepskin.core.patient import NO, QUESTIONS, YES, PatientInfo
from training import sources
from training.batch_predict import COLUMNS, score_items
from training.evaluate import (
    REPORTS,
    auc,
    band_shares,
    bootstrap_ci,
    is_actinic_keratosis,
    pct,
    referral_scores,
    with_ci,
)

APPLIES_TO = ["clinical"]  # fitted on phone photos; dermoscopy keeps only the never-"low" rule
L2 = 1.0  # penalty on the mean log-loss scale, times 1 / n (sklearn's C = 1)
VARIANTS = {"photo": (False, False), "photo + answers": (False, True), "photo + age/sex/site": (True, False),
            "photo + age/sex/site + answers": (True, True)}


# --- the data -------------------------------------------------------------------------------------------------

def pad_table(folder: str | None = None) -> pd.DataFrame:
    """PAD-UFES-20's rows (training.sources, split as its metadata ships it: the promotion gate scores photos
    alone and never reads answers) with the answers as PAD records them, `malignant_label` and `ak`."""
    root = sources.folder("pad_ufes20", folder)
    meta = pd.read_csv(root / "metadata.csv", dtype={column: str for column in QUESTIONS.values()})
    table = sources.pad_ufes20(root)
    for column in QUESTIONS.values():
        table[column] = meta[column].to_numpy()
    table["malignant_label"] = table.dx.isin(MALIGNANT).to_numpy()
    table["ak"] = is_actinic_keratosis(meta.diagnostic).to_numpy()
    return table.reset_index(drop=True)


def patient_of(row: dict, facts: bool, answers: bool) -> PatientInfo:
    return PatientInfo.parse(**({"age": row["age"], "sex": row["sex"], "site": row["site"]} if facts else {}),
                             **({q: row[column] for q, column in QUESTIONS.items()} if answers else {}))


def answer_matrix(table: pd.DataFrame) -> np.ndarray:
    """(N, questions) of 1 yes, 0 no, NaN unknown, through the vocabulary every path uses."""
    codes = np.stack([patient_of(r, False, True).answer_codes() for r in table.to_dict("records")]).astype(float)
    return np.where(codes == 0, np.nan, (codes + 1) / 2)


def score(table: pd.DataFrame, model: Model, facts: bool, answers: bool) -> pd.DataFrame:
    """batch_predict rows (the served pipeline), in the table's order, with its columns beside them."""
    items = [(r["image_id"], Path(r["path"]).read_bytes(), patient_of(r, facts, answers))
             for r in table.to_dict("records")]
    rows = pd.DataFrame(score_items(items, model), columns=COLUMNS)
    return pd.concat([rows.drop(columns="image_id"), table.reset_index(drop=True)], axis=1)


# --- fitting --------------------------------------------------------------------------------------------------

def fit_logistic(features: np.ndarray, y: np.ndarray, offset: np.ndarray | float = 0.0, intercept: bool = True,
                 nonnegative: bool = True) -> np.ndarray:
    """[intercept,] weights minimising mean log-loss of offset + features @ w (+ intercept) + L2 / n * |w|^2 / 2."""
    n, k = features.shape
    first = int(intercept)

    def loss(params: np.ndarray) -> float:
        z = offset + features @ params[first:] + (params[0] if intercept else 0.0)
        return float(np.mean(np.logaddexp(0, z) - y * z) + L2 / n * np.sum(params[first:] ** 2) / 2)

    bounds = [(None, None)] * first + [(0, None) if nonnegative else (None, None)] * k
    return minimize(loss, np.zeros(first + k), bounds=bounds, method="L-BFGS-B").x


def log_loss(y: np.ndarray, z: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0, z) - y * z))


def answer_weights(answers: np.ndarray, y: np.ndarray, age: np.ndarray | None, nonnegative: bool = True) -> dict:
    """Train answers (1/0/NaN) -> {centre, weights} (and the age weight when adjusted for age)."""
    centre = np.nanmean(answers, axis=0)
    features = np.nan_to_num(answers - centre)
    if age is not None:
        z = (age - np.nanmean(age)) / np.nanstd(age)
        features = np.column_stack([features, np.nan_to_num(z)])
    params = fit_logistic(features, y, nonnegative=nonnegative)
    fitted = {"centre": dict(zip(QUESTIONS, centre.round(4).tolist())),
              "weights": dict(zip(QUESTIONS, params[1:1 + len(QUESTIONS)].round(4).tolist()))}
    if age is not None:
        fitted["age_weight_per_sd"] = round(float(params[-1]), 4)
    return fitted


def answer_score(answers: np.ndarray, fitted: dict) -> np.ndarray:
    centre = np.array([fitted["centre"][q] for q in QUESTIONS])
    return np.nan_to_num(answers - centre) @ np.array([fitted["weights"][q] for q in QUESTIONS])


def log_odds(fitted: dict, weight: float) -> dict:
    """What the card serves: the log-odds a yes and a no to each question add (an unknown adds nothing)."""
    return {q: {YES: round(weight * w * (1 - fitted["centre"][q]), 4) + 0.0,  # + 0.0: no "-0.0" in the card
                NO: round(-weight * w * fitted["centre"][q], 4) + 0.0} for q, w in fitted["weights"].items()}


def combination(p_photo: np.ndarray, s: np.ndarray, y: np.ndarray) -> dict:
    """On val: the served b (offset on the photo's logit) and, for the report, the free (a, b, c)."""
    z = logit(p_photo)
    (b,) = fit_logistic(s[:, None], y, offset=z, intercept=False)
    c, a, b_free = fit_logistic(np.column_stack([z, s]), y, nonnegative=False)
    return {"weight": round(float(b), 4), "val_log_loss": log_loss(y, z + b * s),
            "val_log_loss_photo": log_loss(y, z),
            "free_fit": {"image_logit_weight": round(float(a), 4), "answer_weight": round(float(b_free), 4),
                         "intercept": round(float(c), 4), "val_log_loss": log_loss(y, a * z + b_free * s + c)}}


def fit(table: pd.DataFrame, model: Model) -> dict:
    """Both options fitted (weights on train, combination on val); the one with the lower val log-loss kept."""
    train, val = table[table.split == "train"], table[table.split == "val"]
    photo = score(val, model, facts=False, answers=False)
    answered = (photo.status == "done").to_numpy()
    p_photo = pd.to_numeric(photo.malignant[answered]).to_numpy()
    y_train, y_val = train.malignant_label.to_numpy(float), val.malignant_label.to_numpy(float)[answered]
    options = {}
    for name, age in (("answers", None), ("answers adjusted for age", train.age.to_numpy(float))):
        fitted = answer_weights(answer_matrix(train), y_train, age)
        options[name] = {**fitted, **combination(p_photo, answer_score(answer_matrix(val)[answered], fitted), y_val)}
    chosen = min(options, key=lambda name: options[name]["val_log_loss"])
    unconstrained = answer_weights(answer_matrix(train), y_train, None, nonnegative=False)["weights"]
    return {"chosen": chosen, "options": options, "unconstrained_weights": unconstrained}


# --- what users get -------------------------------------------------------------------------------------------

def measures(frame: pd.DataFrame) -> dict:
    """AUC (refusals as referrals) with patient-grouped intervals and band shares, AK malignant and benign."""
    groups, score_ = frame.group.astype(str).to_numpy(), referral_scores(frame)
    out = {}
    for way, y in (("ak_malignant", frame.malignant_label.to_numpy(bool)),
                   ("ak_benign", frame.malignant_label.to_numpy(bool) & ~frame.ak.to_numpy(bool))):
        out[way] = {"auc": auc(y.astype(int), score_),
                    "auc_ci95": bootstrap_ci(lambda t, y=y: auc(y[t].astype(int), score_[t]), groups),
                    "bands": band_shares(frame, y)}
    return out


def auc_gain(plain: pd.DataFrame, answered: pd.DataFrame, y: np.ndarray) -> dict:
    """With answers minus without, on the same photos, and its paired patient-grouped interval."""
    a, b = referral_scores(plain), referral_scores(answered)
    groups = plain.group.astype(str).to_numpy()
    return {"gain": auc(y, b) - auc(y, a), "gain_ci95": bootstrap_ci(lambda t: auc(y[t], b[t]) - auc(y[t], a[t]), groups)}


def measure_all(table: pd.DataFrame, model: Model) -> dict:
    """Every variant on val and test through the pipeline with the stacked card."""
    out = {}
    for split in ("val", "test"):
        rows = table[table.split == split]
        frames = {name: score(rows, model, *how) for name, how in VARIANTS.items()}
        out[split] = {"images": len(rows), "patients": int(rows.group.nunique()),
                      **{name: measures(frame) for name, frame in frames.items()}}
        for way, y in (("ak_malignant", rows.malignant_label.to_numpy(int)),
                       ("ak_benign", (rows.malignant_label & ~rows.ak).to_numpy(int))):
            out[split][f"gain_{way}"] = {
                "photo": auc_gain(frames["photo"], frames["photo + answers"], y),
                "photo + age/sex/site": auc_gain(frames["photo + age/sex/site"],
                                                 frames["photo + age/sex/site + answers"], y)}
    return out


# --- report ---------------------------------------------------------------------------------------------------

HEADER = """# Symptom questions: what the answers add

Model `{version}`, generated by `python -m training.symptoms`. Answer weights fitted on PAD-UFES-20 train (506
photos), their combination with the photo's P(malignant) on PAD-UFES-20 val (168 photos), through the served
pipeline; test (169 photos) was never used to fit or choose. PAD-UFES-20's answers come from clinicians' notes
in Brazil: a person answering at home will be noisier. Served for {applies} photos only; elsewhere answers only
keep a reported change, growth or bleeding from "low" (as everywhere). Answers never make a photo "low" that
the photo alone does not make "low".

Kept on val: **{chosen}** (val log-loss {loss:.3f}; photo alone {photo_loss:.3f}), answer weight b = {b}.
The free fit a * logit P + b * S + c on val: a = {a}, b = {b_free}, c = {c}, val log-loss {free_loss:.3f}
(not served: an unknown answer must change nothing). A weight held at 0 moves nothing: PAD-UFES-20 counts
actinic keratoses, flat and seldom growing, as malignant, which would make "grew" and "raised" lower the chance
(the last column: the fit without that constraint, without age). A "yes" to "grew" still keeps a photo from "low".
"""


def header(card: dict, stack: dict) -> list[str]:
    option = stack["fit"]["options"][stack["fit"]["chosen"]]
    free = option["free_fit"]
    text = HEADER.format(version=card["version"], applies=", ".join(stack["applies_to"]), chosen=stack["fit"]["chosen"],
                         loss=option["val_log_loss"], photo_loss=option["val_log_loss_photo"], b=option["weight"],
                         a=free["image_logit_weight"], b_free=free["answer_weight"], c=free["intercept"],
                         free_loss=free["val_log_loss"])
    rows = [f"| {q} | {v[YES]:+.3f} | {v[NO]:+.3f} | {option['centre'][q]:.2f} | "
            f"{stack['fit']['unconstrained_weights'][q]:+.2f} |" for q, v in stack["log_odds"].items()]
    return [text, "| answer | log-odds of a \"yes\" | of a \"no\" | train share of \"yes\" | unconstrained |",
            "| --- | --- | --- | --- | --- |", *rows, ""]


def bands_cell(bands: dict, group: str) -> str:
    b = bands[group]
    return " / ".join(pct(b[o]) for o in ("low", "medium", "high", "refused")) + f" (n={b['n']})"


def split_section(split: str, m: dict) -> list[str]:
    def auc_cells(v: dict) -> str:
        return " | ".join(with_ci(v[way]["auc"], v[way]["auc_ci95"]) for way in ("ak_malignant", "ak_benign"))

    def gain_cells(base: str) -> str:
        return " | ".join(with_ci(m[f"gain_{way}"][base]["gain"], m[f"gain_{way}"][base]["gain_ci95"], "{:+.3f}")
                          for way in ("ak_malignant", "ak_benign"))

    def band_cells(v: dict) -> str:
        return " | ".join(bands_cell(v[way]["bands"], group) for way in ("ak_malignant", "ak_benign")
                          for group in ("malignant", "benign"))

    return [f"## PAD-UFES-20 {split} ({m['images']} photos, {m['patients']} patients)", "",
            "| | ROC-AUC, AK malignant (95% CI) | ROC-AUC, AK benign (95% CI) |", "| --- | --- | --- |",
            *[f"| {name} | {auc_cells(m[name])} |" for name in VARIANTS],
            *[f"| gain from answers over {base} (paired) | {gain_cells(base)} |"
              for base in ("photo", "photo + age/sex/site")], "",
            "Bands, low / medium / high / refused, %:", "",
            "| | malignant | benign | malignant, AK benign | benign, AK benign |", "| --- | --- | --- | --- | --- |",
            *[f"| {name} | {band_cells(m[name])} |" for name in VARIANTS], ""]


def markdown(card: dict, stack: dict, numbers: dict) -> str:
    return "\n".join([*header(card, stack), *split_section("val", numbers["val"]),
                      *split_section("test", numbers["test"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(BUNDLED_MODEL))
    sources.add_folder_arguments(parser, ("pad_ufes20",))
    parser.add_argument("--reports", type=Path, default=REPORTS)
    args = parser.parse_args()
    table = pad_table(args.pad_ufes20)
    photo_only = Model(args.model)
    card = {k: v for k, v in photo_only.card.items() if k != "symptoms"}  # a rerun refits from the photo alone
    fitted = fit(table, Model(args.model, card))
    chosen = fitted["options"][fitted["chosen"]]
    stack = {"applies_to": APPLIES_TO, "log_odds": log_odds(chosen, chosen["weight"]),
             "fitted_on": {"answer_weights": "PAD-UFES-20 train (506 photos), malignant with akiec",
                           "combination": "PAD-UFES-20 val (168 photos), the photo alone through the pipeline",
                           "reported_on": "PAD-UFES-20 test (169 photos)", "model_version": card["version"]},
             "note": ("Answers in PAD-UFES-20 come from clinicians' notes; a person's own answers at home are "
                      "noisier. Served for clinical (phone) photos only."),
             "fit": fitted}
    stacked = Model(args.model, {**card, "symptoms": stack})
    numbers = measure_all(table, stacked)
    stack["metrics"] = {split: {name: {way: {"auc": v[way]["auc"], "auc_ci95": v[way]["auc_ci95"]}
                                       for way in ("ak_malignant", "ak_benign")}
                                for name, v in numbers[split].items() if name in VARIANTS}
                        | {key: numbers[split][key] for key in ("gain_ak_malignant", "gain_ak_benign")}
                        for split in numbers}
    args.reports.mkdir(parents=True, exist_ok=True)
    (args.reports / "symptoms.json").write_text(json.dumps({"symptoms": stack, "numbers": numbers}, indent=1) + "\n")
    (args.reports / "symptoms.md").write_text(markdown(card, stack, numbers))
    card_path(args.model).write_text(json.dumps({**photo_only.card, "symptoms": stack}, indent=1) + "\n")
    for split in ("val", "test"):
        print(split, {name: round(numbers[split][name]["ak_malignant"]["auc"], 3) for name in VARIANTS})
    print(f"report: {args.reports / 'symptoms.md'}")


if __name__ == "__main__":
    main()
