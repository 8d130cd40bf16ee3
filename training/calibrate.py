"""Calibration and operating points, fitted on the validation split only, per image type.

- Temperature scaling: one scalar T minimising the validation negative log-likelihood, fitted twice: on
  the raw logits, and after a prior correction (training saw classes at an effective prior shaped by class
  weights and source oversampling; adding log(prior of this image type) - log(effective training prior)
  to the logits moves the answer to this type's own prevalence, in theory). The one with the lower
  validation NLL is kept; label smoothing often leaves the network nearer the true prior than theory says.
- P(malignant) is then recalibrated as a binary probability (a slope and an intercept on its logit, Platt
  style), since it is the number a person reads and the bands cut: it holds at the validation photos'
  prevalence of malignancy, recorded beside it.
- Risk bands on that probability p. "low" (reassured, no visit now) when p < t_low: t_low is the largest
  cut-off at which the share of validation malignancies below it stays within its limit *as a one-sided
  95% Clopper-Pearson upper bound*, for all malignancies and for melanoma, BCC and akiec each (their own
  floors, the lowest wins); with too few lesions of a group to show its limit even with none missed, the
  cut-off sits at that group's lowest score and the card says the bound it reaches. "high" (urgent) when
  p >= t_high, the cut-off above which at most HIGH_MAX_BENIGN of benign validation lesions lie.
- Every source of the validation rows (a clinic, a camera, the clinicians' own labels) is held to the same
  limits on its own: each source with malignancies has its own floor, and "high" is the highest of the
  sources' own cut-offs (among sources with at least POPULATION_MIN_BENIGN benign lesions, fewer would set it
  by chance), so that no source sends more than HIGH_MAX_BENIGN of its benign lesions urgently because the
  others are the many. A retrained model scores a new source higher than the old ones; pooled, the old ones
  would set the cut-off and the new source's benign lesions would be sent urgently.
- A coarse label (benign or malignant, no class) counts for P(malignant) and the bands, not for the
  seven-class temperature.
- The chance itself may be fitted on some of the rows only (`calibrate_on`): training.export fits it on the
  sources' validation rows, not on the clinicians' labels, whose mix of cases is whatever they chose to label;
  the bands, a triage decision, must hold on every source.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.stats import beta

from deepskin.core.labels import CLASSES, MALIGNANT, MALIGNANT_INDEX
from deepskin.core.model import calibrate, logit, recalibrate_malignant, sigmoid, softmax

LOW_MAX_MISSED = {"malignant": 0.01, "mel": 0.01, "bcc": 0.02, "akiec": 0.03}
CONFIDENCE = 0.95
HIGH_MAX_BENIGN = 0.20
POPULATION_MIN_BENIGN = 50
ECE_BINS = 10  # equal-mass bins


def nll(logits: np.ndarray, targets: np.ndarray, calibration: dict) -> float:
    p = calibrate(logits, calibration)
    return float(-np.log(np.clip(p[np.arange(len(targets)), targets], 1e-12, 1)).mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray, logit_bias: list[float]) -> float:
    result = minimize_scalar(
        lambda log_t: nll(logits, targets, {"logit_bias": logit_bias, "temperature": float(np.exp(log_t))}),
        bounds=(np.log(0.05), np.log(20.0)), method="bounded",
    )
    return float(np.exp(result.x))


def malignant_probability(probabilities: np.ndarray) -> np.ndarray:
    return probabilities[:, list(MALIGNANT_INDEX)].sum(axis=1)


def clopper_pearson(successes: int, n: int, level: float = 0.95) -> list[float]:
    """Exact (Clopper-Pearson) two-sided interval of a proportion."""
    if n == 0:
        return [float("nan"), float("nan")]
    alpha = 1 - level
    low = beta.ppf(alpha / 2, successes, n - successes + 1) if successes > 0 else 0.0
    high = beta.ppf(1 - alpha / 2, successes + 1, n - successes) if successes < n else 1.0
    return [float(low), float(high)]


def missed_upper_bound(missed: int, lesions: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound on a share seen as missed of lesions: the upper end of the
    two-sided interval whose each tail holds 1 - confidence."""
    return clopper_pearson(missed, lesions, 2 * confidence - 1)[1]


def low_cutoff(scores: np.ndarray, limit: float) -> tuple[float, dict]:
    """The largest cut-off with at most k of these scores below it, k the most misses whose upper bound stays
    within `limit` (0 when even none cannot show it: the cut-off is then the lowest score)."""
    scores = np.sort(scores)
    missed = 0
    while missed < len(scores) - 1 and missed_upper_bound(missed + 1, len(scores)) <= limit:
        missed += 1
    bound = missed_upper_bound(missed, len(scores))
    return float(scores[missed]), {"lesions": len(scores), "missed": missed, "upper_bound": round(bound, 4),
                                   "limit": limit, "shown": bound <= limit}


def band_thresholds(p_malignant: np.ndarray, targets: np.ndarray, is_malignant: np.ndarray | None = None,
                    sources: np.ndarray | None = None) -> tuple[dict, dict]:
    """(thresholds {low, high}, how each floor was set) from validation P(malignant) and class indices (-1 for
    a coarse label, whose malignancy `is_malignant` gives), each row of one of `sources` (default: one source)."""
    is_malignant = np.isin(targets, MALIGNANT_INDEX) if is_malignant is None else is_malignant.astype(bool)
    sources = np.full(len(targets), "validation") if sources is None else np.asarray(sources, str)
    present = sorted(set(sources.tolist()))
    groups = {"malignant": (is_malignant, LOW_MAX_MISSED["malignant"]),
              **{c: (targets == CLASSES.index(c), LOW_MAX_MISSED[c]) for c in MALIGNANT}}
    if len(present) > 1:
        groups.update({f"malignant in {s}": (is_malignant & (sources == s), LOW_MAX_MISSED["malignant"])
                       for s in present})
    if not is_malignant.any():
        raise ValueError("no malignant cases to set the risk bands on")
    floors = {g: low_cutoff(p_malignant[rows], limit) for g, (rows, limit) in groups.items() if rows.any()}
    low = min(cut for cut, _ in floors.values())
    pooled = p_malignant[~is_malignant]
    benign = {s: p_malignant[~is_malignant & (sources == s)] for s in present}
    voting = [scores for scores in benign.values() if len(scores) >= POPULATION_MIN_BENIGN]
    high = max(low, *(high_cutoff(scores) for scores in voting or [pooled]))
    return {"low": low, "high": high}, {
        "floors": {g: info for g, (_, info) in floors.items()},
        "benign_high": float((pooled >= high).mean()) if len(pooled) else None,
        "benign_low": float((pooled < low).mean()) if len(pooled) else None,
        "benign_high_by_source": {s: float((scores >= high).mean()) for s, scores in benign.items() if len(scores)}}


def high_cutoff(benign: np.ndarray) -> float:
    """The cut-off at or above which at most HIGH_MAX_BENIGN of these benign scores lie (1.0 with too few)."""
    benign = np.sort(benign)
    urgent = int(HIGH_MAX_BENIGN * len(benign))  # the most benign lesions "high" may take
    return float(benign[len(benign) - urgent]) if urgent else 1.0


def fit_binary(p_malignant: np.ndarray, is_malignant: np.ndarray) -> dict:
    """Slope and intercept on logit P(malignant) minimising the binary NLL (Platt scaling)."""
    z, y = logit(p_malignant), is_malignant.astype(float)

    def loss(params: np.ndarray) -> float:
        q = np.clip(sigmoid(params[0] * z + params[1]), 1e-12, 1 - 1e-12)
        return float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean())

    slope, intercept = minimize(loss, np.array([1.0, 0.0]), method="Nelder-Mead").x
    return {"slope": float(slope), "intercept": float(intercept), "prevalence": round(float(y.mean()), 4)}


def equal_mass_bins(p: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Bin index per prediction: sorted by p, cut into `bins` runs of (nearly) equal size."""
    which = np.empty(len(p), int)
    which[np.argsort(p, kind="stable")] = np.arange(len(p)) * bins // max(len(p), 1)
    return which


def bin_means(values: np.ndarray, which: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Mean of `values` in each bin (NaN for an empty one)."""
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(which, weights=values, minlength=bins) / counts


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Binary ECE on equal-mass bins: sum over bins of |mean(y) - mean(p)| weighted by bin size."""
    which = equal_mass_bins(p, bins)
    weight = np.bincount(which, minlength=bins) / len(p)
    gap = np.abs(bin_means(y, which, bins) - bin_means(p, which, bins))
    return float(np.nansum(weight * gap))


def prior_shift(type_prior: np.ndarray, training_prior: np.ndarray) -> list[float]:
    return [float(b) for b in np.log(type_prior) - np.log(training_prior)]


def fit(logits: np.ndarray, targets: np.ndarray, prior_bias: list[float], is_malignant: np.ndarray | None = None,
        sources: np.ndarray | None = None, calibrate_on: np.ndarray | None = None) -> dict:
    """Everything the model card's `calibration` and `thresholds` need, from validation logits, class indices
    (-1 for a coarse label: `is_malignant` then says its truth) and each row's source. The temperature and
    P(malignant)'s recalibration are fitted on the `calibrate_on` rows (default all), the bands on all rows."""
    is_malignant = np.isin(targets, MALIGNANT_INDEX) if is_malignant is None else is_malignant.astype(bool)
    fitted_on = np.ones(len(targets), bool) if calibrate_on is None else calibrate_on.astype(bool)
    if len(set(is_malignant[fitted_on & (targets >= 0)].tolist())) < 2:  # too few to fit on (smoke runs): all rows
        fitted_on = np.ones(len(targets), bool)
    named = fitted_on & (targets >= 0)
    candidates = []
    for bias in ([0.0] * len(prior_bias), prior_bias):
        candidate = {"logit_bias": bias, "temperature": fit_temperature(logits[named], targets[named], bias)}
        candidates.append((nll(logits[named], targets[named], candidate), candidate))
    calibration = min(candidates, key=lambda c: c[0])[1]
    binary = fit_binary(malignant_probability(calibrate(logits[fitted_on], calibration)), is_malignant[fitted_on])
    p = recalibrate_malignant(calibrate(logits, calibration), binary)[1]
    raw = malignant_probability(softmax(logits))
    thresholds, bands = band_thresholds(p, targets, is_malignant, sources)
    return {
        "calibration": calibration,
        "malignant_calibration": binary,
        "thresholds": thresholds,
        "bands": bands,
        "val": {
            "nll_before": nll(logits[named], targets[named], {}),
            "nll_after": nll(logits[named], targets[named], calibration),
            "nll_prior_corrected": candidates[1][0],
            "ece_before": expected_calibration_error(raw[fitted_on], is_malignant[fitted_on]),
            "ece_after": expected_calibration_error(p[fitted_on], is_malignant[fitted_on]),
            "brier_after": float(((p[fitted_on] - is_malignant[fitted_on]) ** 2).mean()),
        },
    }
