"""Exercise checkers: ``checks.check_*(student_function)`` prints a ✓ line, or raises ``ExerciseNotDone`` (the
placeholder is still there) or ``ExerciseIncorrect`` (a wrong answer) with a hint. Hints come in steps: each
further failing run, or ``checks.hint("check_x")``, shows the next one. One module per notebook, named after it."""

from .core import ExerciseIncorrect, ExerciseNotDone, call_own, check_close, checker, fail, hint, passed  # noqa: F401
from .nb01_low_rank import (  # noqa: F401
    check_break_even_rank,
    check_error_prediction,
    check_rank_k_approx,
    check_storage_count,
)
from .nb02_lora import check_first_gradients, check_lora_forward, check_lora_merge  # noqa: F401
from .nb03_counting import check_gpt2_counts, check_predict_qv_count  # noqa: F401
from .nb04_nf4 import (  # noqa: F401
    check_bits_per_param,
    check_level_usage,
    check_nearest_nf4,
    check_nf4_table,
    check_quantize_block,
    check_stored_bytes_prediction,
)
from .nb05_memory import check_fit_prediction, check_logits_bytes, check_training_state_bytes  # noqa: F401
from .nb06_finetuning import check_collate, check_recipe, check_save_reload_merge  # noqa: F401
from .nb07_qlora import check_after_load_memory, check_batch_seq  # noqa: F401
from .nb08_scaling import check_fewest_gpus, check_fsdp_shard  # noqa: F401
from .nb09_lora_quality import (  # noqa: F401
    check_best_arm_within_budget,
    check_prediction,
    check_qlora_ratio,
    check_trainable_lora_params,
)
from .nb10_long_context import check_chunked_loss, check_logit_bytes, check_longest_fitting_length  # noqa: F401
