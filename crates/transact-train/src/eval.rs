//! Offline evaluation: HIT@3 per head over logged requests, HR@10 and NDCG@10 under the SASRec protocol.
