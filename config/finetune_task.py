# Task finetuning from examples: teach GPT-2 one task from a file of prompt -> response examples.
# The loss is on the responses only (mask_prompt), each example padded to its micro-batch's
# longest, and every response ends with <|endoftext|>, a target, so the model learns to stop.
#
# The shipped task, dates ("Write 2013-11-30 in words:" -> " November 30, 2013"; data/dates):
#   python data/dates/prepare.py
#   python -m gptkit.train config/finetune_task.py
#   python -m gptkit.evaluate out-task --split=test          # exact match and token F1
#
# Your own examples: a .jsonl file (one JSON object a line) or a .json list, each object one of
#   {"prompt": ..., "completion": ...}                        (verbatim)
#   {"instruction": ..., "input": ..., "output": ...}         (Alpaca's template; input optional)
#   {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}
#   python -m gptkit.prepare my_examples.jsonl --name mytask [--val my_val.jsonl] [--test-fraction 0.1]
#   python -m gptkit.train config/finetune_task.py --dataset=mytask --block_size=512
# data/mytask/meta.json says how long the examples are ("longest", "longer_than"): pick a
# block_size that holds nearly all of them; longer ones are cut, and counted in the run header.
# Small data overfits fast: dropout, a modest LR and early stopping on the val loss.
out_dir = 'out-task'
dataset = 'dates'
init_from = 'gpt2'
mask_prompt = True # learn to answer, not to ask: the prompts are context, never targets

block_size = 32 # the longest dates example has 14 tokens; a batch is as wide as its longest example
batch_size = 16 # examples per micro-batch
gradient_accumulation_steps = 1
max_iters = 300 # about 2.4 epochs of the 2,000 training examples

eval_interval = 25
eval_iters = 13 # micro-batches of val examples, in a fixed order: 13 x 16 covers all 200
always_save_checkpoint = False # ckpt.pt keeps the best val loss
early_stop_patience = 4 # stop once val loss has not improved for 4 evaluations

learning_rate = 1e-4
decay_lr = True
warmup_iters = 20
lr_decay_iters = 300
min_lr = 1e-5
dropout = 0.1
