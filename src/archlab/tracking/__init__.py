"""A study's runs in the dashboards people already use: TensorBoard event files and MLflow.

Both read the store (``archlab export-logs DIR --tensorboard OUT --mlflow URI``);
TensorBoard's files can also be written live (``archlab run --tensorboard OUT``). The
packages are optional: ``pip install 'archlab[tracking]'`` (tensorboard, mlflow-skinny).
"""

from __future__ import annotations

from archlab.tracking.mlflow import MlflowExport, export_mlflow
from archlab.tracking.tensorboard import TensorBoardWriter, export_tensorboard

__all__ = ["MlflowExport", "TensorBoardWriter", "export_mlflow", "export_tensorboard"]
