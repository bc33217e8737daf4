"""Training text: corpus sources, a locally trained tokenizer, token memmaps cached next to the data, batches."""
