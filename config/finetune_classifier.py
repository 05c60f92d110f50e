# Finetune GPT-2 as a classifier: a text in, one of a few labels out (docs/classification.md).
# A new head (n_embd -> number of labels) reads the last real token of each text; the loss is
# the cross-entropy of the label, every example weighing the same.
#
# The shipped task, plays (which of five plays a speech of tiny Shakespeare comes from; data/plays):
#   python data/plays/prepare.py
#   python -m gptkit.train config/finetune_classifier.py
#   python -m gptkit.evaluate out-classifier --split=test     # accuracy, per-label F1, confusion matrix
#   python -m gptkit.classify out-classifier "O Romeo, Romeo, wherefore art thou Romeo?"
#   python -m gptkit.export out-classifier my-classifier      # for pipeline("text-classification")
#
# Your own labelled texts: a .jsonl of {"text": ..., "label": ...}, or a .csv/.tsv with text and
# label columns:
#   python -m gptkit.prepare reviews.csv --name reviews --test-fraction 0.1
#   python -m gptkit.train config/finetune_classifier.py --dataset=reviews
out_dir = 'out-classifier'
dataset = 'plays'
init_from = 'gpt2'

# What trains: the last block, the final LayerNorm and the head (the frozen blocks below get no
# backward pass); 'head' is cheaper and weaker, 'all' costs a full finetune; or --lora_rank=8.
train_layers = 'last_block'
best_by = 'accuracy' # ckpt.pt keeps the best val accuracy ('loss': the best val loss)

block_size = 256 # a batch is as wide as its longest text; the few longer ones are cut (meta.json counts them)
batch_size = 16 # texts per micro-batch
gradient_accumulation_steps = 1
max_iters = 500 # about 3 epochs of the 2,603 training speeches

eval_interval = 50
eval_iters = 21 # micro-batches of val texts, in a fixed order: 21 x 16 covers all 326
always_save_checkpoint = False
early_stop_patience = 4

learning_rate = 5e-5
decay_lr = True
warmup_iters = 20
lr_decay_iters = 500
min_lr = 5e-6
dropout = 0.1
