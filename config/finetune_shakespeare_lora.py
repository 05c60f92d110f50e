# nanoGPT's finetuning recipe for Shakespeare (config/finetune_shakespeare.py) unchanged -- gpt2-xl,
# 1 x 32 x 1024 tokens per iteration, 20 iterations at a constant learning rate, save on
# improvement -- but with LoRA and activation checkpointing, so it fits a 16 GB GPU:
# the frozen base sits in the autocast dtype (3.3 GB in bf16/fp16), only 9.8M adapter weights
# get gradients and AdamW state, and each block keeps only its input for the backward pass.
#   python -m gptkit.train config/finetune_shakespeare_lora.py
#   python -m gptkit.export out-shakespeare-lora gpt2-xl-shakespeare   # merged, Hugging Face format
import time

out_dir = 'out-shakespeare-lora'
eval_interval = 5
eval_iters = 40
wandb_log = False # feel free to turn on
wandb_project = 'shakespeare'
wandb_run_name = 'ft-lora-' + str(time.time())

dataset = 'shakespeare'
init_from = 'gpt2-xl' # this is the largest GPT-2 model

# only save checkpoints if the validation loss improves
always_save_checkpoint = False

# the number of examples per iter:
# 1 batch_size * 32 grad_accum * 1024 tokens = 32,768 tokens/iter
# shakespeare has 301,966 tokens, so 1 epoch ~= 9.2 iters
batch_size = 1
gradient_accumulation_steps = 32
max_iters = 20

# LoRA on all four linear layers of every block (see gptkit/lora.py for why all four):
# rank 8, scale alpha / rank = 2; 9.8M trainable parameters, 0.6% of gpt2-xl.
lora_rank = 8
lora_alpha = 16.0
lora_dropout = 0.05
lora_targets = 'c_attn,attn.c_proj,c_fc,mlp.c_proj'
grad_checkpoint = True # recompute activations in the backward pass: ~30% slower, far less memory

# finetune at constant LR. LoRA wants a larger one than a full finetune (3e-5 in nanoGPT's
# finetuning recipe): B starts at zero and the update B A is low-rank, so small steps barely
# move the model in 20 iterations. 2e-4 is what Hu et al. used for GPT-2 (LoRA paper,
# Table 11), and within the 1e-4 .. 3e-4 that LoRA finetunes commonly use.
learning_rate = 2e-4
decay_lr = False
