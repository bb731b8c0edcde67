import time, json
from kd_core.config import RunConfig
from kd_core.train import run
t=time.time()
r = run(RunConfig(hide_class=3, train_size=10000, epochs=10, temperature=4.0, alpha=0.9, lr=1e-3, repeats=5))
s = r.summary()
print(time.time()-t, s["ce_hidden_acc"], s["kd_hidden_acc"], s["auto_bias"], s["auto_bias_per_seed"], s["kd_hidden_acc_at_auto_bias"], s["kd_acc_at_auto_bias"], s["ce_acc"], s["kd_acc"])
best = max(s["bias_curve"], key=lambda c: c["kd_hidden_acc"])
for c in s["bias_curve"][::4]: print(c)
json.dump(s, open("/tmp/hidden.json","w"))
