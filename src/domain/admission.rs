//! Admission policy for Deployments: which annotations the webhook stamps and why (pure; filled in by the webhook work).
