# Continued pretraining: keep training GPT-2 on a large domain corpus (code, legal text,
# another era's English) so the model absorbs its vocabulary and style. Unlike a short
# finetune this is a long run: warmup + cosine decay, no dropout, weight decay on.
# Prepare your corpus first:  python -m gptkit.prepare path/to/corpus/ --name domain
out_dir = 'out-continue-pretraining'
dataset = 'domain'
init_from = 'gpt2'

eval_interval = 250
eval_iters = 100
always_save_checkpoint = True # a long run: keep the latest state safe

# 8 x 8 x 1024 = 65,536 tokens per iteration; 5,000 iterations ~ 330M tokens
batch_size = 8
gradient_accumulation_steps = 8
block_size = 1024
max_iters = 5000

learning_rate = 1e-4 # well below pretraining's 6e-4: the weights are already good
decay_lr = True
warmup_iters = 200
lr_decay_iters = 5000
min_lr = 1e-5
weight_decay = 0.1
dropout = 0.0
