"""course_lib: the companion library of the LoRA & QLoRA course.

One module per idea (``lowrank``, ``lora``, ``counting``, ``nf4``, ``memory``, ``data``, ``training``, ``qlora``)
plus shared helpers (``models``, ``hardware``, ``plots``, ``widgets``, ``checks``, ``source``). Modules are imported
on demand so that ``import course_lib`` stays fast.
"""

__version__ = "0.1.0"
