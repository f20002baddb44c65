import pytest


@pytest.fixture(scope="session")
def chat_tokenizer():
    """A character-level tokenizer with a ChatML template, built offline in milliseconds."""
    from course_lib import models

    return models.tiny_chat_tokenizer()
