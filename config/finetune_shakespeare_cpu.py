# Shakespeare finetune of the smallest GPT-2 (124M) sized for a laptop CPU: ~25 minutes on
# 2 cores (an iteration took 27 s on a 2-core Zen 3, its evaluations ~7 min in all; more cores
# are faster). nanoGPT's finetuning recipe (constant small LR, save on improvement) in smaller
# pieces: 4 x 2 x 256 = 2,048 tokens per iteration, so 40 iterations see ~27% of an epoch.
out_dir = 'out-shakespeare-cpu'
eval_interval = 10
eval_iters = 10
dataset = 'shakespeare'
init_from = 'gpt2'
always_save_checkpoint = False

block_size = 256 # crops GPT-2's 1024 positions: 4x less attention memory
batch_size = 4
gradient_accumulation_steps = 2
max_iters = 40
dropout = 0.1 # a little regularisation: 300k tokens overfit quickly

learning_rate = 3e-5
decay_lr = False
device = 'cpu'
