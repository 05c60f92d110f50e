# Task finetuning: teach GPT-2 one task (e.g. "question -> answer", "ingredients -> recipe")
# from a few thousand examples. Put each example in its own .txt file (or separate them with
# <|endoftext|>) and prepare:  python -m gptkit.prepare path/to/examples/ --name task
# Small data overfits fast: dropout, a modest LR and early stopping on val loss.
out_dir = 'out-task'
dataset = 'task'
init_from = 'gpt2-medium'

eval_interval = 20
eval_iters = 20
always_save_checkpoint = False # ckpt.pt keeps the best val loss
early_stop_patience = 5 # stop once val loss has not improved for 5 evaluations

batch_size = 4
gradient_accumulation_steps = 8
block_size = 512
max_iters = 1000

learning_rate = 5e-5
decay_lr = True
warmup_iters = 50
lr_decay_iters = 1000
min_lr = 5e-6
dropout = 0.1
