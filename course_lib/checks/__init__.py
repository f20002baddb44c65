"""Exercise checkers: ``checks.check_*(student_function)`` prints a ✓ line, or raises ``ExerciseNotDone`` (the
placeholder is still there) or ``ExerciseIncorrect`` (a wrong answer) with a hint. One submodule per notebook."""

from .core import ExerciseIncorrect, ExerciseNotDone, check_close, fail, passed  # noqa: F401
from .finetune import check_collate, check_recipe, check_save_reload_merge  # noqa: F401
from .lora import check_gpt2_counts, check_lora_forward, check_lora_merge, check_predict_qv_count  # noqa: F401
from .lowrank import check_rank_k_approx, check_storage_count  # noqa: F401
from .nf4 import check_bits_per_param, check_lora_memory, check_nearest_nf4, check_quantize_block  # noqa: F401
