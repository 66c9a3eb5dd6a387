"""What clsf hands to other tools, plugged into a run through callbacks: TensorBoard event files
(written without TensorFlow), MLflow tracking, and the Optuna trial reporter that lets a study's
pruner stop a run. Each imports its tool lazily; run/ attaches them, nothing here drives a run."""
