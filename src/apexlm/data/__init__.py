"""Data layer: embedded corpora, tokenizer, chat formatting with assistant-only loss, packing, datamodules.

Public entry points (import from the submodules; this package imports nothing heavy):
    prepare.ensure_prepared(data_dir=None) -> Path        build `<data>/` on first use
    tokenizer.load_tokenizer(path) -> PreTrainedTokenizerFast   (local folder or hub id)
    datamodule.build_datamodule(cfg, tokenizer, seed) -> LMDataModule (a LightningDataModule)
    datamodule.text_val_loader(domain_or_path, tokenizer, block_size, batch_size, ...) -> DataLoader
    datamodule.build_val_loaders(tokenizer, block_size, batch_size, ...) -> {domain: DataLoader}
    chat.encode_chat(tokenizer, messages, max_length=None), chat.generation_prompt(tokenizer, messages)
    eval_items.load_eval_items(path=None), instructions.prompt_messages(item),
    instructions.score_answer(item, prediction) -> float (exact match), instructions.partial_score(...)
"""
