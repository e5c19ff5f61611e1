"""The evaluator's side of the predictions file, whose definition lives in `bonify.predictions`
(the contract between every stage that runs a model and the evaluator).

The evaluator keeps raising its own `EvalError` for a bad file, so its command line and tests
are unchanged; everything else is re-exported as is.
"""

from __future__ import annotations

import functools

from bonify import predictions as _contract
from bonify.predictions import (  # noqa: F401  (re-exported for the evaluator's modules)
    OPTIONAL_COLUMNS,
    PROB_COLUMNS,
    PROBABILITY_SUM_TOLERANCE,
    REQUIRED_COLUMNS,
    WRITTEN_COLUMNS,
    Predictions,
    PredictionsError,
    predictions_csv_text,
    predictions_table,
)
from eval.errors import EvalError


def _as_eval_error(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except PredictionsError as error:
            raise EvalError(str(error)) from None

    return wrapper


make_predictions = _as_eval_error(_contract.make_predictions)
read_predictions = _as_eval_error(_contract.read_predictions)
