import pytest


@pytest.fixture(scope="session")
def chat_tokenizer():
    """A character-level tokenizer with a ChatML template, built offline in milliseconds."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(c): i for i, c in enumerate(range(32, 127))} | {"\n": 95, "<|im_start|>": 96, "<|im_end|>": 97}
    tk = Tokenizer(tk_models.WordLevel(vocab, unk_token="<|im_end|>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tk.decoder = decoders.Fuse()  # join characters back without spaces
    tk.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<|im_end|>", eos_token="<|im_end|>")
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tokenizer
