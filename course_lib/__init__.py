"""course_lib: the companion library of the LoRA & QLoRA course.

One module per idea (``lowrank``, ``lora``, ``counting``, ``nf4``, ``memory``, ``data``, ``training``, ``qlora``,
``distributed``, ``longctx``, ``variants`` (PiSSA, LoftQ), ``quality`` with ``heldout_tasks`` (notebook 09)) plus
shared helpers (``models``, ``hardware``, ``plots``, ``widgets``, ``quiz``, ``checks``, ``source``, ``fsutil``,
``train_loop`` and ``latency`` for notebook 02), and ``resources``: the files read at run time (tasks, accelerate
configs, GPU tables), shipped inside the package. Modules are imported on demand so that ``import course_lib`` stays
fast.
"""

__version__ = "0.1.0"

import logging as _logging

# On CPUs with AVX512-BF16, bitsandbytes tries to fetch an optional kernel from the Hugging Face hub at import and
# warns when it cannot; it then uses its own built-in CPU kernel. Offline that warning is noise in every notebook.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
